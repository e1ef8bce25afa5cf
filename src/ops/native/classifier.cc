// The sharded classifier's hot path, fused (src/ops/softmax-shard.ts and
// src/ops/row-optimizer.ts hold the tfjs composite these kernels replace, and
// every formula's convention).
//
// Logits without materialising n(W): z = (s·n(E))·Wᵀ·diag(1/m), m_j = max(‖W_j‖, 1e-12),
// so the GEMM runs on the raw rows and the column scale rides along the pass over the
// logits that the softmax needs anyway. The backward uses the same trick twice:
// with G' = Gz·diag(1/m), s·Gz·n(W) = s·G'·W and (Gzᵀ·s·n(E))_j / m_j = (G'ᵀ·s·n(E))_j.
// Rows are processed `chunk` at a time: never more than chunk×K logits exist.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.h"

#include "simd.h"

namespace sf {

static const float kNormEps = 1e-12f;

// ---- the margin on the target cosine (float64; margin.ts's targetCos/targetCosGrad) ----

static double targetCos(double c, const Margin& mg) {
  const bool legacy = mg.variant == kLegacy || mg.variant == kLegacyEasy;
  if (legacy || mg.m1 == 1.0) {
    const double phi = c * std::cos(mg.m2) - std::sqrt(std::max(0.0, 1.0 - c * c)) * std::sin(mg.m2);
    if (mg.variant == kLegacyEasy) return c > 0 ? phi : c;
    if (mg.variant == kLegacy) return c > -std::cos(mg.m2) ? phi : c - mg.m2 * std::sin(mg.m2);
    return phi - mg.m3;
  }
  return std::cos(mg.m1 * std::acos(std::min(1.0, std::max(-1.0, c))) + mg.m2) - mg.m3;
}

static double targetCosGrad(double c, const Margin& mg) {
  if (mg.variant == kStraightThrough) return 1.0;
  if (mg.variant == kLegacy && !(c > -std::cos(mg.m2))) return 1.0;
  if (mg.variant == kLegacyEasy && !(c > 0)) return 1.0;
  const double sinT = std::sqrt(std::max(1.0 - c * c, 1e-12));
  if (mg.m1 == 1.0) return mg.m2 == 0.0 ? 1.0 : std::cos(mg.m2) + (std::sin(mg.m2) * c) / sinT;
  const double theta = std::acos(std::min(1.0, std::max(-1.0, c)));
  return (mg.m1 * std::sin(mg.m1 * theta + mg.m2)) / sinT;
}

static inline double clampCos(double z, double s) { return std::min(1.0, std::max(-1.0, z / s)); }

// ---- vectorisable loops --------------------------------------------------------------

/**
 * e^x for x ≤ 88 (Cephes expf: x = n·ln2 + r, a degree-6 polynomial in r, 2^n through
 * the exponent bits); within 2 ulp; 0 below −87.3 (the true value is < 1.2e-38).
 * Branch-free, so the loops below vectorise.
 */
static SF_INLINE float expf32(float x) {
  x = std::min(x, 88.0f);
  const float xc = std::max(x, -87.3f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : p * scale;
}

/** z ← z·inv (column scale) and returns max_j z_j. */
static SF_INLINE float scaleMaxBody(float* __restrict z, const float* __restrict inv, int64_t k) {
  float m = -INFINITY;
  for (int64_t j = 0; j < k; j++) {
    const float v = z[j] * inv[j];
    z[j] = v;
    m = v > m ? v : m;
  }
  return m;
}
SF_DISPATCH_R(float, scaleMax, (float* z, const float* inv, int64_t k), (z, inv, k))

static SF_INLINE double sumExpBody(const float* __restrict z, int64_t k, float shift) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < k; j++) s += (double)expf32(z[j] - shift);
  return s;
}
SF_DISPATCH_R(double, sumExp, (const float* z, int64_t k, float shift), (z, k, shift))

/** G'_j = exp(z_j·inv_j − shift)·inv_j: (p/N) through the column scale. */
static SF_INLINE void gradRowBody(float* __restrict z, const float* __restrict inv, int64_t k, float shift) {
  for (int64_t j = 0; j < k; j++) z[j] = expf32(z[j] * inv[j] - shift) * inv[j];
}
SF_DISPATCH(gradRow, (float* z, const float* inv, int64_t k, float shift), (z, inv, k, shift))

static SF_INLINE double dotBody(const float* __restrict a, const float* __restrict b, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; j++) s += (double)a[j] * (double)b[j];
  return s;
}
SF_DISPATCH_R(double, dot, (const float* a, const float* b, int64_t d), (a, b, d))

static SF_INLINE double sumSquaresBody(const float* __restrict a, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; j++) s += (double)(a[j] * a[j]);  // each square rounded to float, as tf.square
  return s;
}
SF_DISPATCH_R(double, sumSquares, (const float* a, int64_t d), (a, d))

// ---- helpers ------------------------------------------------------------------------

/** Enough work per row to be worth a second thread. */
static bool parallel(int64_t rows, int64_t cols) { return threads() > 1 && rows > 1 && rows * cols >= (1 << 16); }

void rowNorms(const float* x, int64_t rows, int64_t d, float* out) {
#pragma omp parallel for schedule(static) if (parallel(rows, d))
  for (int64_t j = 0; j < rows; j++) out[j] = (float)std::sqrt(sumSquares(x + j * d, d));
}

/** inv[j] = 1/max(norm_j, eps) from `norm` (or computed from w when norm is null); returns inv. */
static float* inverseNorms(const float* w, const float* norm, int64_t k, int64_t d, int slot) {
  float* inv = scratch(slot, (size_t)std::max<int64_t>(k, 1));
  if (!norm) {
    rowNorms(w, k, d, inv);
    norm = inv;
  }
  for (int64_t j = 0; j < k; j++) inv[j] = 1.0f / std::max(norm[j], kNormEps);
  return inv;
}

/** xs = s·n(x) per row (as tf: unit = x / max(‖x‖, eps), then ×s); normOut gets ‖x_i‖. */
static void scaledUnitRows(const float* x, int64_t n, int64_t d, float s, float* xs, float* normOut) {
#pragma omp parallel for schedule(static) if (parallel(n, d))
  for (int64_t i = 0; i < n; i++) {
    const float nrm = (float)std::sqrt(sumSquares(x + i * d, d));
    normOut[i] = nrm;
    const float m = std::max(nrm, kNormEps);
    const float* xi = x + i * d;
    float* o = xs + i * d;
    for (int64_t j = 0; j < d; j++) o[j] = (xi[j] / m) * s;
  }
}

static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// ---- forward ---------------------------------------------------------------------------

void shardForward(const float* emb, const float* w, const float* wNorm, const int32_t* labels, int64_t n, int64_t k,
                  int64_t d, const Margin& mg, int64_t chunk, float* rowMax, float* sumExpOut, float* target) {
  if (n == 0 || k == 0) return;
  const float s = (float)mg.s;
  float* xs = scratch(0, (size_t)(n * d));
  std::vector<float> xNorm((size_t)n);
  scaledUnitRows(emb, n, d, s, xs, xNorm.data());
  const float* inv = inverseNorms(w, wNorm, k, d, 2);
  chunk = std::max<int64_t>(1, std::min(chunk, n));
  float* z = scratch(1, (size_t)(chunk * k));
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    gemm(false, true, rows, k, d, 1.0f, xs + r0 * d, d, w, d, 0.0f, z, k);
#pragma omp parallel for schedule(static) if (parallel(rows, k))
    for (int64_t r = 0; r < rows; r++) {
      const int64_t i = r0 + r;
      float* zi = z + r * k;
      float mx = scaleMax(zi, inv, k);
      const int32_t y = labels[i];
      if (y >= 0) {
        const float zt = (float)(mg.s * targetCos(clampCos(zi[y], mg.s), mg));
        target[i] = zt;
        const bool wasMax = zi[y] == mx;
        zi[y] = zt;
        if (zt > mx) mx = zt;
        else if (wasMax && zt < mx) {  // the target was the row's largest entry: find the new one
          mx = -INFINITY;
          for (int64_t j = 0; j < k; j++) mx = zi[j] > mx ? zi[j] : mx;
        }
      } else {
        target[i] = 0.0f;
      }
      rowMax[i] = mx;
      sumExpOut[i] = (float)sumExp(zi, k, mx);
    }
  }
}

// ---- backward ----------------------------------------------------------------------------

/**
 * Rows [j0, j1) of ∂W through n(W), in place. gradW holds a_j = (∂L/∂n(W))_j / m_j:
 * ∂L/∂W_j = a_j − [‖W_j‖ > eps]((a_j·W_j)/m_j²)·W_j.
 */
static void weightRowsGrad(float* gradW, const float* w, const float* wNorm, const float* inv, int64_t j0, int64_t j1,
                           int64_t d) {
  for (int64_t j = j0; j < j1; j++) {
    float* a = gradW + j * d;
    const float* wj = w + j * d;
    const bool live = wNorm ? wNorm[j] > kNormEps : 1.0f / inv[j] > kNormEps;
    const float coef = live ? (float)(dot(a, wj, d) * (double)inv[j] * (double)inv[j]) : 0.0f;
    for (int64_t t = 0; t < d; t++) a[t] = a[t] - coef * wj[t];
  }
}

void shardBackward(const float* emb, const float* w, const float* wNorm, const int32_t* labels, const float* lse,
                   int64_t n, int64_t k, int64_t d, const Margin& mg, double rowsTotal, int64_t chunk, float* gradEmb,
                   float* gradW) {
  if (n == 0 || k == 0) return;
  const float s = (float)mg.s;
  float* xs = scratch(0, (size_t)(n * d));
  std::vector<float> xNorm((size_t)n);
  scaledUnitRows(emb, n, d, s, xs, xNorm.data());
  const float* inv = inverseNorms(w, wNorm, k, d, 2);
  chunk = std::max<int64_t>(1, std::min(chunk, n));
  float* g = scratch(1, (size_t)(chunk * k));
  const double logN = std::log(rowsTotal);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    gemm(false, true, rows, k, d, 1.0f, xs + r0 * d, d, w, d, 0.0f, g, k);
#pragma omp parallel for schedule(static) if (parallel(rows, k))
    for (int64_t r = 0; r < rows; r++) {
      const int64_t i = r0 + r;
      float* gi = g + r * k;
      const int32_t y = labels[i];
      const float zy = y >= 0 ? gi[y] * inv[y] : 0.0f;
      gradRow(gi, inv, k, (float)((double)lse[i] + logN));  // exp(z − lse − log N) = p/N, then ×1/m
      if (y >= 0) {
        const double c = clampCos(zy, mg.s);
        const double p = std::exp(mg.s * targetCos(c, mg) - (double)lse[i]);
        gi[y] = (float)(((p - 1.0) / rowsTotal) * targetCosGrad(c, mg)) * inv[y];
      }
    }
    // ∂L/∂n(E) (before the normalisation's backward) = s·G'·W;  Σ_chunks G'ᵀ·(s·n(E)) = diag(1/m)·∂L/∂n(W)
    gemm(false, false, rows, d, k, s, g, k, w, d, 0.0f, gradEmb + r0 * d, d);
    const float beta = r0 == 0 ? 0.0f : 1.0f;
    if (r0 + rows < n) {
      gemm(true, false, k, d, rows, 1.0f, g, k, xs + r0 * d, d, beta, gradW, d);
      continue;
    }
    // Last chunk: ∂W in blocks of weight rows, each finished through n(W) while it is in cache
    // (one GEMM per block and thread; OpenBLAS runs single-threaded inside the parallel region).
    const int64_t kb = 256;
#pragma omp parallel for schedule(dynamic) if (threads() > 1 && k > kb)
    for (int64_t j0 = 0; j0 < k; j0 += kb) {
      const int64_t jb = std::min(kb, k - j0);
      gemm(true, false, jb, d, rows, 1.0f, g + j0, k, xs + r0 * d, d, beta, gradW + j0 * d, d);
      weightRowsGrad(gradW, w, wNorm, inv, j0, j0 + jb, d);
    }
  }
  // Through n(E): (dy − [‖x‖ > eps](dy·u)u) / max(‖x‖, eps), u = n(x)
#pragma omp parallel for schedule(static) if (parallel(n, d))
  for (int64_t i = 0; i < n; i++) {
    const float m = std::max(xNorm[i], kNormEps);
    const float* xi = emb + i * d;
    float* dy = gradEmb + i * d;
    std::vector<float> u((size_t)d);
    for (int64_t j = 0; j < d; j++) u[j] = xi[j] / m;
    const float radial = xNorm[i] > kNormEps ? (float)dot(dy, u.data(), d) : 0.0f;
    for (int64_t j = 0; j < d; j++) dy[j] = (dy[j] - radial * u[j]) / m;
  }
}

// ---- sparse row optimizer steps, in place -----------------------------------------------
// Float32 operations in the composite's order, one rounding each (no FMA contraction), so
// the results equal the tfjs composite's (each tfjs op rounds to float32) bit for bit.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

static SF_INLINE void sgdRowBody(float* __restrict w, float* __restrict v, const float* __restrict g, int64_t d,
                                 float lr, float mu, float wd) {
  for (int64_t t = 0; t < d; t++) {
    const float vn = v[t] * mu + (g[t] + w[t] * wd);
    v[t] = vn;
    w[t] = w[t] - vn * lr;
  }
}
SF_DISPATCH(sgdRow, (float* w, float* v, const float* g, int64_t d, float lr, float mu, float wd), (w, v, g, d, lr, mu, wd))

void rowSgdUpdate(float* w, float* v, const float* g, const int32_t* index, int64_t rows, int64_t d, float lr, float mu,
                  float wd) {
#pragma omp parallel for schedule(static) if (parallel(rows, d))
  for (int64_t j = 0; j < rows; j++) {
    const int64_t r = index ? index[j] : j;
    sgdRow(w + r * d, v + r * d, g + j * d, d, lr, mu, wd);
  }
}

static SF_INLINE void adamwRowBody(float* __restrict w, float* __restrict m, float* __restrict v,
                                   const float* __restrict g, int64_t d, const AdamWConsts& c) {
  for (int64_t t = 0; t < d; t++) {
    const float decayed = w[t] * c.decay;
    const float mn = m[t] * c.beta1 + g[t] * c.oneMinusBeta1;
    const float vn = v[t] * c.beta2 + (g[t] * g[t]) * c.oneMinusBeta2;
    const float denom = std::sqrt(vn) / c.sqrtBc2 + c.eps;
    m[t] = mn;
    v[t] = vn;
    w[t] = decayed - (mn / denom) * c.stepSize;
  }
}
SF_DISPATCH(adamwRow, (float* w, float* m, float* v, const float* g, int64_t d, const AdamWConsts& c), (w, m, v, g, d, c))

void rowAdamWUpdate(float* w, float* m, float* v, const float* g, const int32_t* index, int64_t rows, int64_t d,
                    const AdamWConsts& c) {
#pragma omp parallel for schedule(static) if (parallel(rows, d))
  for (int64_t j = 0; j < rows; j++) {
    const int64_t r = index ? index[j] : j;
    adamwRow(w + r * d, m + r * d, v + r * d, g + j * d, d, c);
  }
}

#pragma GCC pop_options

void gatherRows(const float* x, const int32_t* index, int64_t rows, int64_t d, float* out) {
#pragma omp parallel for schedule(static) if (parallel(rows, d))
  for (int64_t j = 0; j < rows; j++) std::memcpy(out + j * d, x + (int64_t)index[j] * d, (size_t)d * sizeof(float));
}

}  // namespace sf
