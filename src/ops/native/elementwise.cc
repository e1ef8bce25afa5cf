// Memory-bound element-wise ops and reductions. Every broadcast shardface's
// models produce is one [P,Q,R] pattern: one operand full, the other constant
// along the middle axis Q (scalar: P=R=1; per-channel [C]: P=1, R=C;
// [N,1,1,C]: P=N, R=C; [N,H,W,1]: R=1).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels.h"

#include "simd.h"

namespace sf {

/**
 * Below this many elements one thread: these ops are memory-bound, a second thread
 * gains little, and on a busy machine waiting for it costs a scheduler tick.
 */
static const int64_t kParallelMin = 1 << 21;

struct Add { static float f(float a, float b) { return a + b; } };
struct Sub { static float f(float a, float b) { return a - b; } };
struct Mul { static float f(float a, float b) { return a * b; } };
struct Div { static float f(float a, float b) { return a / b; } };
// Vectorises only with -fno-trapping-math (binding.gyp): both arms are computed.
struct Prelu { static float f(float x, float alpha) { return x < 0.0f ? alpha * x : x; } };
struct Max { static float f(float a, float b) { return a > b || a != a ? a : b; } };
struct Min { static float f(float a, float b) { return a < b || a != a ? a : b; } };
struct SquaredDiff { static float f(float a, float b) { float d = a - b; return d * d; } };

/** out[i] = a[i] op b[i] (side 0), a[i] op b[j] (side 1), a[j] op b[i] (side 2) for one [rows, r] block. */
template <class Op>
static inline void block(const float* __restrict a, const float* __restrict b, float* __restrict out, int64_t rows,
                         int64_t r, int side) {
  const int64_t n = rows * r;
  if (side == 0) {
    for (int64_t i = 0; i < n; i++) out[i] = Op::f(a[i], b[i]);
  } else if (r == 1) {
    if (side == 1) { const float v = b[0]; for (int64_t i = 0; i < n; i++) out[i] = Op::f(a[i], v); }
    else { const float v = a[0]; for (int64_t i = 0; i < n; i++) out[i] = Op::f(v, b[i]); }
  } else {
    for (int64_t q = 0; q < rows; q++) {
      float* o = out + q * r;
      if (side == 1) { const float* x = a + q * r; for (int64_t j = 0; j < r; j++) o[j] = Op::f(x[j], b[j]); }
      else { const float* x = b + q * r; for (int64_t j = 0; j < r; j++) o[j] = Op::f(a[j], x[j]); }
    }
  }
}

static SF_INLINE void binaryBlockBody(int op, const float* a, const float* b, float* out, int64_t rows, int64_t r, int side) {
  switch (op) {
    case kAdd: block<Add>(a, b, out, rows, r, side); break;
    case kSub: block<Sub>(a, b, out, rows, r, side); break;
    case kMul: block<Mul>(a, b, out, rows, r, side); break;
    case kDiv: block<Div>(a, b, out, rows, r, side); break;
    case kPreluOp: block<Prelu>(a, b, out, rows, r, side); break;
    case kMax: block<Max>(a, b, out, rows, r, side); break;
    case kMin: block<Min>(a, b, out, rows, r, side); break;
    case kSquaredDiff: block<SquaredDiff>(a, b, out, rows, r, side); break;
  }
}
SF_DISPATCH(binaryBlock, (int op, const float* a, const float* b, float* out, int64_t rows, int64_t r, int side), (op, a, b, out, rows, r, side))

void binary(int op, const float* a, const float* b, float* out, int64_t P, int64_t Q, int64_t R, int side) {
  const int64_t total = P * Q * R;
  if (side == 0) { Q = P * Q * R; P = 1; R = 1; }
  // Work items: (p, a slice of q). Each covers [rows, R] contiguous output elements.
  const int t = total >= kParallelMin ? threads() : 1;
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(Q, (int64_t)t * 4 / std::max<int64_t>(P, 1)));
#pragma omp parallel for collapse(2) schedule(static) if (t > 1)
  for (int64_t p = 0; p < P; p++) {
    for (int64_t k = 0; k < slices; k++) {
      const int64_t q0 = Q * k / slices, q1 = Q * (k + 1) / slices;
      const int64_t off = (p * Q + q0) * R;
      const float* av = side == 2 ? a + p * R : a + off;
      const float* bv = side == 1 ? b + p * R : b + off;
      binaryBlock(op, av, bv, out + off, q1 - q0, R, side);
    }
  }
}

static SF_INLINE void reluBlockBody(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}
SF_DISPATCH(reluBlock, (const float* x, float* y, int64_t n), (x, y, n))

void relu(const float* x, float* y, int64_t n) {
  const int t = n >= kParallelMin ? threads() : 1;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lo = n * i / nt, hi = n * (i + 1) / nt;
    reluBlock(x + lo, y + lo, hi - lo);
  }
}

/** acc[r] += sum over rows of x[row, r], rows contiguous. */
static SF_INLINE void sumRowsBody(const float* __restrict x, double* __restrict acc, int64_t rows, int64_t r) {
  if (r == 1) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < rows; i++) s += x[i];
    acc[0] += s;
    return;
  }
  for (int64_t q = 0; q < rows; q++) {
    const float* row = x + q * r;
    for (int64_t j = 0; j < r; j++) acc[j] += row[j];
  }
}
SF_DISPATCH(sumRows, (const float* x, double* acc, int64_t rows, int64_t r), (x, acc, rows, r))

void reduceSum(const float* x, float* out, int64_t P, int64_t Q, int64_t R, double scale) {
  const int64_t total = P * Q * R;
  const int t = total >= kParallelMin ? threads() : 1;
  if (P >= 4 * t || Q < 2 * t) {
    // Enough independent outputs: threads split p.
    std::vector<double> accAll((size_t)t * R);
#pragma omp parallel num_threads(t) if (t > 1)
    {
      double* acc = accAll.data() + (size_t)omp_get_thread_num() * R;
#pragma omp for schedule(static)
      for (int64_t p = 0; p < P; p++) {
        std::fill(acc, acc + R, 0.0);
        sumRows(x + p * Q * R, acc, Q, R);
        for (int64_t j = 0; j < R; j++) out[p * R + j] = (float)(acc[j] * scale);
      }
    }
    return;
  }
  // Few outputs, long reduction: threads split q, each into its own partial sums.
  std::vector<double> parts((size_t)t * P * R, 0.0);
#pragma omp parallel num_threads(t)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t q0 = Q * i / nt, q1 = Q * (i + 1) / nt;
    double* acc = parts.data() + (size_t)i * P * R;
    for (int64_t p = 0; p < P; p++) sumRows(x + (p * Q + q0) * R, acc + p * R, q1 - q0, R);
  }
  for (int64_t j = 0; j < P * R; j++) {
    double v = 0.0;
    for (int i = 0; i < t; i++) v += parts[(size_t)i * P * R + j];
    out[j] = (float)(v * scale);
  }
}

}  // namespace sf
