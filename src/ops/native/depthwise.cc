// Depthwise convolution (NHWC, filter [kh, kw, c, multiplier]) and both backprops,
// as direct loops: OpenMP over (image, row); the channel loop innermost so it
// vectorises. Row workers are compiled twice (AVX2+FMA and baseline) and picked at
// run time by the CPU's feature flags (simd.h), so the addon still runs without AVX2.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"

#include "simd.h"

namespace sf {

/** Output columns [lo, hi) whose tap kx reads inside the input row. */
static inline void tapRange(const ConvShape& s, int64_t kx, int64_t* lo, int64_t* hi) {
  const int64_t first = s.pl - kx;          // ox * sw >= first
  const int64_t last = s.w - 1 + s.pl - kx;  // ox * sw <= last
  *lo = first <= 0 ? 0 : (first + s.sw - 1) / s.sw;
  *hi = last < 0 ? 0 : std::min<int64_t>(s.ow, last / s.sw + 1);
}

// 8-float vectors (GCC/Clang vector extensions): one ymm register with AVX2, two xmm
// without. Explicit vectors keep the accumulators in registers; plain float arrays
// of 64 made GCC spill them to the stack.
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
static SF_INLINE v8 load8(const float* p) { return *reinterpret_cast<const v8u*>(p); }
static SF_INLINE void store8(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }

/** out[c : c+8K] = sum over taps t of a[t][c..] * b[t][c..]. */
template <int K>
static SF_INLINE void tapsDot(const float* const* a, const float* const* b, int nt, int64_t c, float* out) {
  v8 acc[K];
  for (int k = 0; k < K; k++) acc[k] = v8{};
  for (int t = 0; t < nt; t++) {
    const float* p = a[t] + c;
    const float* q = b[t] + c;
    for (int k = 0; k < K; k++) acc[k] += load8(p + 8 * k) * load8(q + 8 * k);
  }
  for (int k = 0; k < K; k++) store8(out + c + 8 * k, acc[k]);
}

/** out[c] = sum over taps t of a[t][c] * b[t][c], for every channel. */
static SF_INLINE void tapsDotAll(const float* const* a, const float* const* b, int nt, int64_t channels, float* out) {
  int64_t c = 0;
  for (; c + 64 <= channels; c += 64) tapsDot<8>(a, b, nt, c, out);
  for (; c + 16 <= channels; c += 16) tapsDot<2>(a, b, nt, c, out);
  for (; c + 8 <= channels; c += 8) tapsDot<1>(a, b, nt, c, out);
  for (; c < channels; c++) {
    float acc = 0.0f;
    for (int t = 0; t < nt; t++) acc += a[t][c] * b[t][c];
    out[c] = acc;
  }
}

/** out[c : c+8K] += sum over i < count of x[i*xs + c..] * g[i*gs + c..]. */
template <int K>
static SF_INLINE void stridedDot(const float* x, int64_t xs, const float* g, int64_t gs, int64_t count, int64_t c,
                                 float* out) {
  v8 acc[K];
  for (int k = 0; k < K; k++) acc[k] = v8{};
  for (int64_t i = 0; i < count; i++) {
    const float* p = x + i * xs + c;
    const float* q = g + i * gs + c;
    for (int k = 0; k < K; k++) acc[k] += load8(p + 8 * k) * load8(q + 8 * k);
  }
  for (int k = 0; k < K; k++) store8(out + c + 8 * k, load8(out + c + 8 * k) + acc[k]);
}

/** One output row y[n, oy, :, :]. */
static SF_INLINE void forwardRowBody(const float* __restrict x, const float* __restrict w, float* __restrict y, const ConvShape& s,
                       int64_t n, int64_t oy, const float** xs, const float** ws) {
  const int64_t C = s.c, M = s.cout / s.c, CO = s.cout;
  float* yRow = y + (n * s.oh + oy) * s.ow * CO;
  if (M == 1) {
    for (int64_t ox = 0; ox < s.ow; ox++) {
      int nt = 0;
      for (int64_t ky = 0; ky < s.kh; ky++) {
        const int64_t iy = oy * s.sh - s.pt + ky;
        if (iy < 0 || iy >= s.h) continue;
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t ix = ox * s.sw - s.pl + kx;
          if (ix < 0 || ix >= s.w) continue;
          xs[nt] = x + ((n * s.h + iy) * s.w + ix) * C;
          ws[nt++] = w + (ky * s.kw + kx) * CO;
        }
      }
      tapsDotAll(xs, ws, nt, C, yRow + ox * CO);
    }
    return;
  }
  std::memset(yRow, 0, s.ow * CO * sizeof(float));
  for (int64_t ky = 0; ky < s.kh; ky++) {
    const int64_t iy = oy * s.sh - s.pt + ky;
    if (iy < 0 || iy >= s.h) continue;
    const float* xRow = x + (n * s.h + iy) * s.w * C;
    for (int64_t kx = 0; kx < s.kw; kx++) {
      const float* wp = w + (ky * s.kw + kx) * CO;
      int64_t oxLo, oxHi;
      tapRange(s, kx, &oxLo, &oxHi);
      for (int64_t ox = oxLo; ox < oxHi; ox++) {
        const float* __restrict xp = xRow + (ox * s.sw - s.pl + kx) * C;
        float* __restrict yp = yRow + ox * CO;
        for (int64_t c = 0; c < C; c++)
          for (int64_t q = 0; q < M; q++) yp[c * M + q] += xp[c] * wp[c * M + q];
      }
    }
  }
}
SF_DISPATCH(forwardRow, (const float* x, const float* w, float* y, const ConvShape& s, int64_t n, int64_t oy, const float** xs, const float** ws), (x, w, y, s, n, oy, xs, ws))

/** One input-gradient row dx[n, iy, :, :] (a gather over the outputs that read it). */
static SF_INLINE void backpropInputRowBody(const float* __restrict dy, const float* __restrict w, float* __restrict dx,
                             const ConvShape& s, int64_t n, int64_t iy, const float** gs, const float** ws) {
  const int64_t C = s.c, M = s.cout / s.c, CO = s.cout;
  float* dxRow = dx + (n * s.h + iy) * s.w * C;
  if (M == 1) {
    for (int64_t ix = 0; ix < s.w; ix++) {
      int nt = 0;
      for (int64_t ky = 0; ky < s.kh; ky++) {
        const int64_t ty = iy + s.pt - ky;
        if (ty < 0 || ty % s.sh != 0 || ty / s.sh >= s.oh) continue;
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t tx = ix + s.pl - kx;
          if (tx < 0 || tx % s.sw != 0 || tx / s.sw >= s.ow) continue;
          gs[nt] = dy + ((n * s.oh + ty / s.sh) * s.ow + tx / s.sw) * CO;
          ws[nt++] = w + (ky * s.kw + kx) * CO;
        }
      }
      tapsDotAll(gs, ws, nt, C, dxRow + ix * C);
    }
    return;
  }
  std::memset(dxRow, 0, s.w * C * sizeof(float));
  for (int64_t ky = 0; ky < s.kh; ky++) {
    const int64_t ty = iy + s.pt - ky;
    if (ty < 0 || ty % s.sh != 0 || ty / s.sh >= s.oh) continue;
    const float* dyRow = dy + (n * s.oh + ty / s.sh) * s.ow * CO;
    for (int64_t kx = 0; kx < s.kw; kx++) {
      const float* wp = w + (ky * s.kw + kx) * CO;
      for (int64_t ox = 0; ox < s.ow; ox++) {
        const int64_t ix = ox * s.sw - s.pl + kx;
        if (ix < 0 || ix >= s.w) continue;
        const float* __restrict gp = dyRow + ox * CO;
        float* __restrict dp = dxRow + ix * C;
        for (int64_t c = 0; c < C; c++) {
          float acc = 0.0f;
          for (int64_t q = 0; q < M; q++) acc += gp[c * M + q] * wp[c * M + q];
          dp[c] += acc;
        }
      }
    }
  }
}
SF_DISPATCH(backpropInputRow, (const float* dy, const float* w, float* dx, const ConvShape& s, int64_t n, int64_t iy, const float** gs, const float** ws), (dy, w, dx, s, n, iy, gs, ws))

/** acc[ky, kx, :] += the filter gradient contributed by output row dy[n, oy, :, :]. */
static SF_INLINE void backpropFilterRowBody(const float* __restrict x, const float* __restrict dy, float* __restrict acc,
                              const ConvShape& s, int64_t n, int64_t oy) {
  const int64_t C = s.c, M = s.cout / s.c, CO = s.cout;
  const float* dyRow = dy + (n * s.oh + oy) * s.ow * CO;
  for (int64_t ky = 0; ky < s.kh; ky++) {
    const int64_t iy = oy * s.sh - s.pt + ky;
    if (iy < 0 || iy >= s.h) continue;
    const float* xRow = x + (n * s.h + iy) * s.w * C;
    for (int64_t kx = 0; kx < s.kw; kx++) {
      float* __restrict ap = acc + (ky * s.kw + kx) * CO;
      int64_t oxLo, oxHi;
      tapRange(s, kx, &oxLo, &oxHi);
      if (oxHi <= oxLo) continue;
      if (M == 1) {
        const float* xp = xRow + (oxLo * s.sw - s.pl + kx) * C;
        const float* gp = dyRow + oxLo * CO;
        const int64_t count = oxHi - oxLo, xs = s.sw * C;
        int64_t c = 0;
        for (; c + 64 <= C; c += 64) stridedDot<8>(xp, xs, gp, CO, count, c, ap);
        for (; c + 16 <= C; c += 16) stridedDot<2>(xp, xs, gp, CO, count, c, ap);
        for (; c + 8 <= C; c += 8) stridedDot<1>(xp, xs, gp, CO, count, c, ap);
        for (; c < C; c++) {
          float sum = 0.0f;
          for (int64_t i = 0; i < count; i++) sum += xp[i * xs + c] * gp[i * CO + c];
          ap[c] += sum;
        }
        continue;
      }
      for (int64_t ox = oxLo; ox < oxHi; ox++) {
        const float* __restrict xp = xRow + (ox * s.sw - s.pl + kx) * C;
        const float* __restrict gp = dyRow + ox * CO;
        for (int64_t c = 0; c < C; c++)
          for (int64_t q = 0; q < M; q++) ap[c * M + q] += xp[c] * gp[c * M + q];
      }
    }
  }
}
SF_DISPATCH(backpropFilterRow, (const float* x, const float* dy, float* acc, const ConvShape& s, int64_t n, int64_t oy), (x, dy, acc, s, n, oy))

void depthwise(const float* x, const float* w, float* y, const ConvShape& s) {
  prefaultOutput(y, (size_t)(s.n * s.oh * s.ow * s.cout));
#pragma omp parallel if (s.n * s.oh > 1)
  {
    std::vector<const float*> taps(2 * s.kh * s.kw);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.n; n++)
      for (int64_t oy = 0; oy < s.oh; oy++) forwardRow(x, w, y, s, n, oy, taps.data(), taps.data() + s.kh * s.kw);
  }
}

void depthwiseBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s) {
  prefaultOutput(dx, (size_t)(s.n * s.h * s.w * s.c));
#pragma omp parallel if (s.n * s.h > 1)
  {
    std::vector<const float*> taps(2 * s.kh * s.kw);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.n; n++)
      for (int64_t iy = 0; iy < s.h; iy++) backpropInputRow(dy, w, dx, s, n, iy, taps.data(), taps.data() + s.kh * s.kw);
  }
}

/** Rows go to per-thread partial sums in small dynamic chunks (a preempted thread does not hold up the rest), then the partials are summed. */
void depthwiseBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const int64_t size = s.kh * s.kw * s.cout, rows = s.n * s.oh;
  const int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads(), rows));
  float* parts = scratch(1, (size_t)t * size);
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = parts + i * size;
    std::memset(acc, 0, size * sizeof(float));
#pragma omp for schedule(dynamic, 4) nowait
    for (int64_t r = 0; r < rows; r++) backpropFilterRow(x, dy, acc, s, r / s.oh, r % s.oh);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t j = 0; j < size; j++) {
      float v = 0.0f;
      for (int p = 0; p < nt; p++) v += parts[p * size + j];
      dw[j] = v;
    }
  }
}

}  // namespace sf
