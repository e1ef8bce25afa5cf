// Batched matrix multiply over OpenBLAS, and the fused bias + activation pass.
#include <cblas.h>
#include <omp.h>

#include <cmath>

#include "kernels.h"

namespace sf {

static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

void batchMatMul(const float* a, const float* b, float* c, int64_t batch, int64_t batchA, int64_t batchB, int64_t m,
                 int64_t n, int64_t k, bool ta, bool tb) {
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  if (batch == 1 || (batchB == 1 && batchA == batch && !ta)) {
    // A single GEMM: with a shared B and untransposed A the batch folds into M.
    sgemm(ta, tb, m * batch, n, k, a, lda, b, ldb, 0.0f, c, n);
    return;
  }
  const int64_t sizeA = m * k, sizeB = k * n, sizeC = m * n;
  // Small matrices: one whole GEMM per thread (OpenBLAS runs single-threaded inside
  // an OpenMP region). Large ones: one after another, each on all threads.
  const bool small = m * n * k < (int64_t)1 << 21;
  if (small && threads() > 1) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < batch; i++)
      sgemm(ta, tb, m, n, k, a + (i % batchA) * sizeA, lda, b + (i % batchB) * sizeB, ldb, 0.0f, c + i * sizeC, n);
  } else {
    for (int64_t i = 0; i < batch; i++)
      sgemm(ta, tb, m, n, k, a + (i % batchA) * sizeA, lda, b + (i % batchB) * sizeB, ldb, 0.0f, c + i * sizeC, n);
  }
}

static inline float activate(float v, int act, float alpha, float preluW) {
  switch (act) {
    case kRelu: return v < 0.0f ? 0.0f : v;
    case kRelu6: return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
    case kPrelu: return v < 0.0f ? preluW * v : v;
    case kLeakyRelu: return v < 0.0f ? alpha * v : v;
    case kElu: return v >= 0.0f ? v : (float)std::expm1((double)v);
    case kSigmoid: return (float)(1.0 / (1.0 + std::exp(-(double)v)));
    default: return v;
  }
}

static inline float pick(const float* p, int mode, int64_t row, int64_t col, int64_t cols) {
  switch (mode) {
    case kScalar: return p[0];
    case kPerColumn: return p[col];
    case kFull: return p[row * cols + col];
    default: return 0.0f;
  }
}

void epilogue(float* y, int64_t rows, int64_t cols, const float* bias, int biasMode, int act, float alpha,
              const float* preluW, int preluMode) {
  if (biasMode == kNone && act == kLinear) return;
#pragma omp parallel for schedule(static) if (rows * cols > 32768)
  for (int64_t r = 0; r < rows; r++) {
    float* row = y + r * cols;
    if (biasMode == kPerColumn && (act == kLinear || act == kRelu)) {
      // The common case, kept branch-free so it vectorises.
      if (act == kRelu)
        for (int64_t j = 0; j < cols; j++) { float v = row[j] + bias[j]; row[j] = v < 0.0f ? 0.0f : v; }
      else
        for (int64_t j = 0; j < cols; j++) row[j] += bias[j];
      continue;
    }
    for (int64_t j = 0; j < cols; j++) {
      float v = row[j] + pick(bias, biasMode, r, j, cols);
      row[j] = activate(v, act, alpha, act == kPrelu ? pick(preluW, preluMode, r, j, cols) : 0.0f);
    }
  }
}

}  // namespace sf
