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

// Let a * b + c on the vector types become one FMA in the AVX2 build (-std=c++17 turns
// contraction off).
#pragma GCC optimize("fp-contract=fast")

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


// ---- 3x3, stride 1, multiplier 1, channels % 8 == 0: the common MobileNet case ----
// y[oy, ox, c] = sum over ky, kx of x[oy - pt + ky, ox - pl + kx, c] * wk[ky*3 + kx][c],
// for an input of ih x iw and an output of oh x ow. The backprop-input is this with the
// flipped filter and padding 2 - p. Per (row, 8-channel block) the nine weight vectors
// stay in registers and four output pixels share each row's six input loads.
struct Dw3 {
  int64_t ih, iw, oh, ow, c, pt, pl;
};

/** Output row `oy` of image base pointers x (ih*iw*c) and y (oh*ow*c). */
static SF_INLINE void dw3RowBody(const float* __restrict x, const float* __restrict wk, float* __restrict y, const Dw3& d,
                                 int64_t oy) {
  const int64_t C = d.c;
  static const float zeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float* yRow = y + oy * d.ow * C;
  // Columns whose three taps all land inside the input row.
  const int64_t lo = std::min<int64_t>(d.ow, std::max<int64_t>(0, d.pl));
  const int64_t hi = std::max<int64_t>(lo, std::min<int64_t>(d.ow, d.iw - 2 + d.pl));
  for (int64_t c = 0; c < C; c += 8) {
    const float* rows[3];
    v8 w0[3], w1[3], w2[3];
    for (int ky = 0; ky < 3; ky++) {
      const int64_t iy = oy - d.pt + ky;
      const bool in = iy >= 0 && iy < d.ih;
      rows[ky] = x + (in ? iy : 0) * d.iw * C + c;
      w0[ky] = in ? load8(wk + (ky * 3 + 0) * C + c) : load8(zeros);
      w1[ky] = in ? load8(wk + (ky * 3 + 1) * C + c) : load8(zeros);
      w2[ky] = in ? load8(wk + (ky * 3 + 2) * C + c) : load8(zeros);
    }
    float* yc = yRow + c;
    auto edge = [&](int64_t ox) {
      v8 acc = v8{};
      for (int ky = 0; ky < 3; ky++) {
        const int64_t ix = ox - d.pl;
        if (ix >= 0 && ix < d.iw) acc += load8(rows[ky] + ix * C) * w0[ky];
        if (ix + 1 >= 0 && ix + 1 < d.iw) acc += load8(rows[ky] + (ix + 1) * C) * w1[ky];
        if (ix + 2 >= 0 && ix + 2 < d.iw) acc += load8(rows[ky] + (ix + 2) * C) * w2[ky];
      }
      store8(yc + ox * C, acc);
    };
    for (int64_t ox = 0; ox < lo; ox++) edge(ox);
    int64_t ox = lo;
    for (; ox + 4 <= hi; ox += 4) {
      v8 a0 = v8{}, a1 = v8{}, a2 = v8{}, a3 = v8{};
      for (int ky = 0; ky < 3; ky++) {
        const float* p = rows[ky] + (ox - d.pl) * C;
        const v8 x0 = load8(p), x1 = load8(p + C), x2 = load8(p + 2 * C);
        const v8 x3 = load8(p + 3 * C), x4 = load8(p + 4 * C), x5 = load8(p + 5 * C);
        a0 += x0 * w0[ky]; a0 += x1 * w1[ky]; a0 += x2 * w2[ky];
        a1 += x1 * w0[ky]; a1 += x2 * w1[ky]; a1 += x3 * w2[ky];
        a2 += x2 * w0[ky]; a2 += x3 * w1[ky]; a2 += x4 * w2[ky];
        a3 += x3 * w0[ky]; a3 += x4 * w1[ky]; a3 += x5 * w2[ky];
      }
      store8(yc + ox * C, a0);
      store8(yc + (ox + 1) * C, a1);
      store8(yc + (ox + 2) * C, a2);
      store8(yc + (ox + 3) * C, a3);
    }
    for (; ox < hi; ox++) {
      v8 a0 = v8{};
      for (int ky = 0; ky < 3; ky++) {
        const float* p = rows[ky] + (ox - d.pl) * C;
        a0 += load8(p) * w0[ky]; a0 += load8(p + C) * w1[ky]; a0 += load8(p + 2 * C) * w2[ky];
      }
      store8(yc + ox * C, a0);
    }
    for (ox = hi; ox < d.ow; ox++) edge(ox);
  }
}
/** Rows [r0, r1) of the n * oh output rows. */
static SF_INLINE void dw3RowsBody(const float* x, const float* wk, float* y, const Dw3& d, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / d.oh;
    dw3RowBody(x + n * d.ih * d.iw * d.c, wk, y + n * d.oh * d.ow * d.c, d, r % d.oh);
  }
}
SF_DISPATCH(dw3Rows, (const float* x, const float* wk, float* y, const Dw3& d, int64_t r0, int64_t r1), (x, wk, y, d, r0, r1))

/**
 * Static contiguous row split: each thread first-touches (page-faults) only its own
 * output rows, in parallel. No prefaultOutput here: measured at this size, the
 * MADV_POPULATE_WRITE pass (serial, or per thread contending on the mm lock) cost
 * more than letting the stores fault the fresh pages in.
 */
static void dw3(const float* x, const float* wk, float* y, const Dw3& d, int64_t n) {
  const int64_t rows = n * d.oh;
  const int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads(), rows));
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = rows * i / nt, r1 = rows * (i + 1) / nt;
    dw3Rows(x, wk, y, d, r0, r1);
  }
}

static bool dw3Fits(const ConvShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.cout == s.c && s.c % 8 == 0;
}

void depthwise(const float* x, const float* w, float* y, const ConvShape& s) {
  if (dw3Fits(s)) {
    dw3(x, w, y, Dw3{s.h, s.w, s.oh, s.ow, s.c, s.pt, s.pl}, s.n);
    return;
  }
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
  if (dw3Fits(s)) {
    // dx[iy, ix] = sum dy[iy + pt - ky, ix + pl - kx] * w[ky, kx]: a forward over dy with
    // the filter flipped (ky -> 2 - ky, kx -> 2 - kx) and padding 2 - p.
    float* wf = scratch(1, (size_t)9 * s.c);
    for (int t = 0; t < 9; t++) std::memcpy(wf + t * s.c, w + (8 - t) * s.c, s.c * sizeof(float));
    dw3(dy, wf, dx, Dw3{s.oh, s.ow, s.h, s.w, s.c, 2 - s.pt, 2 - s.pl}, s.n);
    return;
  }
  prefaultOutput(dx, (size_t)(s.n * s.h * s.w * s.c));
#pragma omp parallel if (s.n * s.h > 1)
  {
    std::vector<const float*> taps(2 * s.kh * s.kw);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < s.n; n++)
      for (int64_t iy = 0; iy < s.h; iy++) backpropInputRow(dy, w, dx, s, n, iy, taps.data(), taps.data() + s.kh * s.kw);
  }
}

/**
 * Rows go to per-thread partial sums, then the partials are summed. The rows are split statically: with a
 * dynamic split which thread sums which rows changes from run to run, and so do the last bits of dw.
 */
void depthwiseBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const int64_t size = s.kh * s.kw * s.cout, rows = s.n * s.oh;
  const int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads(), rows));
  float* parts = scratch(1, (size_t)t * size);
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = parts + i * size;
    std::memset(acc, 0, size * sizeof(float));
#pragma omp for schedule(static) nowait
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

// ---- grouped convolution with few channels per group (filter [kh, kw, I, cout]) ----------
// MobileFaceNet's 3×3 with 64 groups of 2: as im2col + GEMM that is 64 GEMMs of 18×2 per
// block, far below what a direct loop does. Here it becomes a depthwise-like sum: each
// input row is first expanded to e[ix][i][o] = x[ix][g(o)·I + i] (g(o) = o / M, M the
// output channels per group), so that output channel o reads contiguous, channel-aligned
// vectors e[ix][i][·] just as a depthwise conv reads x[ix][·], and tap (ky, kx, i) pairs
// with the filter's contiguous w[ky][kx][i][·]. The backprop-input does the same over
// expanded dy rows against the filter rearranged per input channel; the backprop-filter
// reduces e·dy over the pixels as the depthwise one does. A thread keeps the kh expanded
// rows it last made (a ring keyed by row), so consecutive output rows share them.
namespace {

/** dst[p][i][o] = src[p·srcC + idx[i·outC + o]] for p < pixels. */
SF_INLINE void expandPixels(const float* __restrict src, int64_t srcC, const int32_t* __restrict idx, int64_t width,
                            int64_t pixels, float* __restrict dst) {
  for (int64_t p = 0; p < pixels; p++) {
    const float* s = src + p * srcC;
    float* d = dst + p * width;
    for (int64_t k = 0; k < width; k++) d[k] = s[idx[k]];
  }
}

/** The last kh expanded rows a thread made, keyed by (image, row). */
struct RowRing {
  std::vector<float> rows;
  std::vector<int64_t> tags;
  int64_t slot, kh;
  RowRing(int64_t kh_, int64_t slotFloats) : rows((size_t)(kh_ * slotFloats)), tags((size_t)kh_, -1), slot(slotFloats), kh(kh_) {}
  /** Expanded row `r` of image `n` (rows per image `perImage`), expanding src on a miss. */
  SF_INLINE const float* get(int64_t n, int64_t r, int64_t perImage, const float* src, int64_t srcC, const int32_t* idx,
                             int64_t width, int64_t pixels) {
    const int64_t k = r % kh, tag = n * perImage + r;
    float* d = rows.data() + k * slot;
    if (tags[k] != tag) {
      expandPixels(src + tag * pixels * srcC, srcC, idx, width, pixels, d);
      tags[k] = tag;
    }
    return d;
  }
};

}  // namespace

/** Output rows [r0, r1) of the n·oh rows; I input channels per group. */
static SF_INLINE void groupedSmallRowsBody(const float* x, const float* w, float* y, const ConvShape& s, const int32_t* idx,
                                           int64_t r0, int64_t r1) {
  const int64_t I = s.c / s.groups, CO = s.cout, width = I * CO;
  RowRing ring(s.kh, s.w * width);
  std::vector<const float*> taps((size_t)(2 * s.kh * s.kw * I));
  const float** xs = taps.data();
  const float** ws = taps.data() + s.kh * s.kw * I;
  const float* er[64];
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / s.oh, oy = r % s.oh;
    for (int64_t ky = 0; ky < s.kh; ky++) {
      const int64_t iy = oy * s.sh - s.pt + ky;
      er[ky] = iy >= 0 && iy < s.h ? ring.get(n, iy, s.h, x, s.c, idx, width, s.w) : nullptr;
    }
    float* yRow = y + r * s.ow * CO;
    for (int64_t ox = 0; ox < s.ow; ox++) {
      int nt = 0;
      for (int64_t ky = 0; ky < s.kh; ky++) {
        if (!er[ky]) continue;
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t ix = ox * s.sw - s.pl + kx;
          if (ix < 0 || ix >= s.w) continue;
          for (int64_t i = 0; i < I; i++) {
            xs[nt] = er[ky] + (ix * I + i) * CO;
            ws[nt++] = w + ((ky * s.kw + kx) * I + i) * CO;
          }
        }
      }
      tapsDotAll(xs, ws, nt, CO, yRow + ox * CO);
    }
  }
}
SF_DISPATCH(groupedSmallRows, (const float* x, const float* w, float* y, const ConvShape& s, const int32_t* idx, int64_t r0, int64_t r1), (x, w, y, s, idx, r0, r1))

/** Input-gradient rows [r0, r1) of the n·h rows, from dy rows expanded per input channel and the rearranged filter wr. */
static SF_INLINE void groupedSmallBackpropInputRowsBody(const float* dy, const float* wr, float* dx, const ConvShape& s,
                                                        const int32_t* idx, int64_t r0, int64_t r1) {
  const int64_t M = s.cout / s.groups, C = s.c, width = M * C;
  RowRing ring(s.kh, s.ow * width);
  std::vector<const float*> taps((size_t)(2 * s.kh * s.kw * M));
  const float** gs = taps.data();
  const float** ws = taps.data() + s.kh * s.kw * M;
  const float* er[64];
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / s.h, iy = r % s.h;
    for (int64_t ky = 0; ky < s.kh; ky++) {
      const int64_t ty = iy + s.pt - ky;
      er[ky] = ty >= 0 && ty % s.sh == 0 && ty / s.sh < s.oh ? ring.get(n, ty / s.sh, s.oh, dy, s.cout, idx, width, s.ow) : nullptr;
    }
    float* dxRow = dx + r * s.w * C;
    for (int64_t ix = 0; ix < s.w; ix++) {
      int nt = 0;
      for (int64_t ky = 0; ky < s.kh; ky++) {
        if (!er[ky]) continue;
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t tx = ix + s.pl - kx;
          if (tx < 0 || tx % s.sw != 0 || tx / s.sw >= s.ow) continue;
          for (int64_t j = 0; j < M; j++) {
            gs[nt] = er[ky] + ((tx / s.sw) * M + j) * C;
            ws[nt++] = wr + ((ky * s.kw + kx) * M + j) * C;
          }
        }
      }
      tapsDotAll(gs, ws, nt, C, dxRow + ix * C);
    }
  }
}
SF_DISPATCH(groupedSmallBackpropInputRows, (const float* dy, const float* wr, float* dx, const ConvShape& s, const int32_t* idx, int64_t r0, int64_t r1), (dy, wr, dx, s, idx, r0, r1))

/** out[c] += sum over i < count of x[i·xs + c] · g[i·gs + c], for c < channels. */
static SF_INLINE void stridedDotAll(const float* x, int64_t xs, const float* g, int64_t gs, int64_t count, int64_t channels, float* out) {
  int64_t c = 0;
  for (; c + 64 <= channels; c += 64) stridedDot<8>(x, xs, g, gs, count, c, out);
  for (; c + 16 <= channels; c += 16) stridedDot<2>(x, xs, g, gs, count, c, out);
  for (; c + 8 <= channels; c += 8) stridedDot<1>(x, xs, g, gs, count, c, out);
  for (; c < channels; c++) {
    float sum = 0.0f;
    for (int64_t i = 0; i < count; i++) sum += x[i * xs + c] * g[i * gs + c];
    out[c] += sum;
  }
}

/** acc[ky][kx][i][o] += the filter gradient of output rows r of `rows` taken by this thread (a contiguous share). */
static SF_INLINE void groupedSmallBackpropFilterRowsBody(const float* x, const float* dy, float* acc, const ConvShape& s,
                                                         const int32_t* idx, int64_t r0, int64_t r1) {
  const int64_t I = s.c / s.groups, CO = s.cout, width = I * CO;
  RowRing ring(s.kh, s.w * width);
  for (int64_t r = r0; r < r1; r++) {
    const int64_t n = r / s.oh, oy = r % s.oh;
    const float* dyRow = dy + r * s.ow * CO;
    for (int64_t ky = 0; ky < s.kh; ky++) {
      const int64_t iy = oy * s.sh - s.pt + ky;
      if (iy < 0 || iy >= s.h) continue;
      const float* er = ring.get(n, iy, s.h, x, s.c, idx, width, s.w);
      for (int64_t kx = 0; kx < s.kw; kx++) {
        int64_t oxLo, oxHi;
        tapRange(s, kx, &oxLo, &oxHi);
        if (oxHi <= oxLo) continue;
        for (int64_t i = 0; i < I; i++)
          stridedDotAll(er + ((oxLo * s.sw - s.pl + kx) * I + i) * CO, s.sw * width, dyRow + oxLo * CO, CO, oxHi - oxLo, CO,
                        acc + ((ky * s.kw + kx) * I + i) * CO);
      }
    }
  }
}
SF_DISPATCH(groupedSmallBackpropFilterRows, (const float* x, const float* dy, float* acc, const ConvShape& s, const int32_t* idx, int64_t r0, int64_t r1), (x, dy, acc, s, idx, r0, r1))

/** idx[a·outC + o] = (o / per) · across + a: where expanded slot (a, o) reads its source pixel. */
static std::vector<int32_t> expandIndex(int64_t slots, int64_t outC, int64_t per, int64_t across) {
  std::vector<int32_t> idx((size_t)(slots * outC));
  for (int64_t a = 0; a < slots; a++)
    for (int64_t o = 0; o < outC; o++) idx[a * outC + o] = (int32_t)((o / per) * across + a);
  return idx;
}

/** Runs work(r0, r1) over contiguous shares of `rows`, one per thread. */
template <typename F>
static void splitRows(int64_t rows, F work) {
  const int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads(), rows));
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    work(rows * i / nt, rows * (i + 1) / nt);
  }
}

bool groupedSmallFits(const ConvShape& s) {
  return s.groups > 1 && s.c / s.groups <= kGroupedSmallMax && s.cout / s.groups <= kGroupedSmallMax && s.kh <= 64;
}

void groupedSmall(const float* x, const float* w, float* y, const ConvShape& s) {
  const int64_t I = s.c / s.groups, M = s.cout / s.groups;
  const std::vector<int32_t> idx = expandIndex(I, s.cout, M, I);
  splitRows(s.n * s.oh, [&](int64_t r0, int64_t r1) { groupedSmallRows(x, w, y, s, idx.data(), r0, r1); });
}

void groupedSmallBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s) {
  const int64_t I = s.c / s.groups, M = s.cout / s.groups, taps = s.kh * s.kw;
  // wr[tap][j][c] = w[tap][c % I][(c / I)·M + j]: the filter entry input channel c meets output j of its group at
  std::vector<float> wr((size_t)(taps * M * s.c));
  for (int64_t t = 0; t < taps; t++)
    for (int64_t j = 0; j < M; j++)
      for (int64_t c = 0; c < s.c; c++) wr[(t * M + j) * s.c + c] = w[(t * I + c % I) * s.cout + (c / I) * M + j];
  const std::vector<int32_t> idx = expandIndex(M, s.c, I, M);
  splitRows(s.n * s.h, [&](int64_t r0, int64_t r1) { groupedSmallBackpropInputRows(dy, wr.data(), dx, s, idx.data(), r0, r1); });
}

void groupedSmallBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const int64_t I = s.c / s.groups, M = s.cout / s.groups, size = s.kh * s.kw * I * s.cout, rows = s.n * s.oh;
  const std::vector<int32_t> idx = expandIndex(I, s.cout, M, I);
  const int t = (int)std::max<int64_t>(1, std::min<int64_t>(threads(), rows));
  float* parts = scratch(1, (size_t)t * size);
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = parts + i * size;
    std::memset(acc, 0, size * sizeof(float));
    groupedSmallBackpropFilterRows(x, dy, acc, s, idx.data(), rows * i / nt, rows * (i + 1) / nt);
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
