// Ordinary and grouped 2-D convolution (NHWC) as im2col + GEMM, forward and both
// backprops, blocked over output rows: each thread takes a block of output pixels,
// writes that block's patch matrix (small enough to stay in its L2) and multiplies
// it by a single-threaded sgemm (OpenBLAS runs single-threaded inside an OpenMP
// region), so the patches never travel through L3/DRAM and no thread waits for
// another. Groups share one patch row laid out [g][kh][kw][s] (s < c/groups), so
// group g's patch matrix is a strided view (lda = kh*kw*c) and its filter slice
// w[:, :, :, g*O:(g+1)*O] is a strided view (ldb = cout).
// Backprop-input takes one image per thread (dy_img · wᵀ, then a race-free col2im
// while the patch gradients are still in L2); images too big for that, with stride
// 1, run as the forward conv of dy with the flipped, transposed filter. Backprop-
// filter gives each thread its own partial dw over its blocks and sums them at the end.
// Pointwise (1×1, stride 1) forward and backprop-input have nothing to copy and stay
// one sgemm over all threads.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace sf {

/** The old whole-chunk path (stride > 1 backprop-input): im2col scratch capped near this many floats. */
static const int64_t kColsBudget = (int64_t)8 << 20;
/** Floats of one block's patch matrix (~256 KB), so patches, output block and OpenBLAS's packed copies fit in L2. */
static const int64_t kBlockFloats = (int64_t)64 << 10;
/** Backprop-input goes image by image when one image's patch gradients fit this (~768 KB, in L2). */
static const int64_t kImageColsFloats = (int64_t)192 << 10;
/** Fewest output pixels per block: narrower GEMMs lose more to OpenBLAS's per-call packing than L2 saves. */
static const int64_t kMinRows = 128;

static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static bool isPointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.oh == s.h && s.ow == s.w;
}


/** Output pixels per block: a multiple of 16, at least 16, patch matrix within kBlockFloats. */
static int64_t blockRows(int64_t K, int64_t rows) {
  int64_t rb = std::max<int64_t>(kMinRows, (kBlockFloats / std::max<int64_t>(K, 1)) / 16 * 16);
  // Enough blocks to keep every thread busy (and balance a loaded machine) without tiny GEMMs.
  const int64_t want = (int64_t)threads() * 4;
  if (rows / rb < want) rb = std::max<int64_t>(64, (rows / want + 15) / 16 * 16);
  return std::min(rb, std::max<int64_t>(rows, 1));
}

/** Patch rows [r0, r1) (r = (image * oh + oy) * ow + ox): dst[r - r0][g][kh][kw][s]. */
static void im2colRows(const float* __restrict x, float* __restrict dst, const ConvShape& s, int64_t r0, int64_t r1) {
  const int64_t S = s.c / s.groups, K = s.kh * s.kw * s.c, khw = s.kh * s.kw, C = s.c, pixels = s.oh * s.ow;
  for (int64_t r = r0; r < r1; r++, dst += K) {
    const int64_t img = r / pixels, oy = (r % pixels) / s.ow, ox = r % s.ow;
    const float* base = x + img * s.h * s.w * C;
    const int64_t ix0 = ox * s.sw - s.pl;
    const bool rowInside = ix0 >= 0 && ix0 + s.kw <= s.w;
    for (int64_t ky = 0; ky < s.kh; ky++) {
      const int64_t iy = oy * s.sh - s.pt + ky;
      const bool yInside = iy >= 0 && iy < s.h;
      if (s.groups == 1) {
        float* d = dst + ky * s.kw * C;
        if (!yInside) { std::memset(d, 0, s.kw * C * sizeof(float)); continue; }
        const float* src = base + (iy * s.w + ix0) * C;
        if (rowInside) { std::memcpy(d, src, s.kw * C * sizeof(float)); continue; }
        for (int64_t kx = 0; kx < s.kw; kx++) {
          const int64_t ix = ix0 + kx;
          if (ix >= 0 && ix < s.w) std::memcpy(d + kx * C, src + kx * C, C * sizeof(float));
          else std::memset(d + kx * C, 0, C * sizeof(float));
        }
        continue;
      }
      for (int64_t kx = 0; kx < s.kw; kx++) {
        const int64_t ix = ix0 + kx, tap = ky * s.kw + kx;
        const bool inside = yInside && ix >= 0 && ix < s.w;
        const float* src = base + (iy * s.w + ix) * C;
        for (int64_t g = 0; g < s.groups; g++) {
          float* d = dst + (g * khw + tap) * S;
          if (inside) std::memcpy(d, src + g * S, S * sizeof(float));
          else std::memset(d, 0, S * sizeof(float));
        }
      }
    }
  }
}

/** out[rows, cout] (+)= patches[rows, K] · w, one group after another. */
static void blockGemm(const float* patches, int64_t K, const float* w, float* out, int64_t rows, const ConvShape& s) {
  if (s.groups == 1) {
    sgemm(false, false, rows, s.cout, K, patches, K, w, s.cout, 0.0f, out, s.cout);
    return;
  }
  const int64_t O = s.cout / s.groups, Kg = K / s.groups;
  for (int64_t g = 0; g < s.groups; g++)
    sgemm(false, false, rows, O, Kg, patches + g * Kg, K, w + g * O, s.cout, 0.0f, out + g * O, s.cout);
}

/** Forward conv of any shape, blocked (see the top of the file). */
static void forwardBlocked(const float* x, const float* w, float* y, const ConvShape& s) {
  const int64_t K = s.kh * s.kw * s.c, rows = s.n * s.oh * s.ow;
  const bool direct = isPointwise(s);  // x is already the patch matrix
  const int64_t rb = blockRows(K, rows), blocks = (rows + rb - 1) / rb;
  const int t = threads();
  float* cols = direct ? nullptr : scratch(0, (size_t)t * rb * K);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1 && blocks > 1)
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
    const float* patches = x + r0 * K;
    if (!direct) {
      float* mine = cols + (size_t)omp_get_thread_num() * rb * K;
      im2colRows(x, mine, s, r0, r1);
      patches = mine;
    }
    blockGemm(patches, K, w, y + r0 * s.cout, r1 - r0, s);
  }
}

void conv2d(const float* x, const float* w, float* y, const ConvShape& s) {
  prefaultOutput(y, (size_t)(s.n * s.oh * s.ow * s.cout));
  if (isPointwise(s) && s.groups == 1) {
    // Nothing to copy: one sgemm over all threads (OpenBLAS splits it well).
    sgemm(false, false, s.n * s.h * s.w, s.cout, s.c, x, s.c, w, s.cout, 0.0f, y, s.cout);
    return;
  }
  forwardBlocked(x, w, y, s);
}

// ---- backprop-input ---------------------------------------------------------------------

/** dx[img, iy, :, :] = sum of the patch gradients (cols: that image's) that read each pixel. */
static void col2imRow(const float* cols, float* dx, const ConvShape& s, int64_t img, int64_t iy) {
  const int64_t S = s.c / s.groups, K = s.kh * s.kw * s.c, khw = s.kh * s.kw;
  float* rowOut = dx + (img * s.h + iy) * s.w * s.c;
  for (int64_t ix = 0; ix < s.w; ix++) {
    float* px = rowOut + ix * s.c;
    std::memset(px, 0, s.c * sizeof(float));
    for (int64_t ky = 0; ky < s.kh; ky++) {
      const int64_t ty = iy + s.pt - ky;
      if (ty < 0 || ty % s.sh != 0) continue;
      const int64_t oy = ty / s.sh;
      if (oy >= s.oh) continue;
      for (int64_t kx = 0; kx < s.kw; kx++) {
        const int64_t tx = ix + s.pl - kx;
        if (tx < 0 || tx % s.sw != 0) continue;
        const int64_t ox = tx / s.sw;
        if (ox >= s.ow) continue;
        const float* src = cols + (oy * s.ow + ox) * K;
        const int64_t tap = ky * s.kw + kx;
        if (s.groups == 1) {
          const float* p = src + tap * s.c;
          for (int64_t c = 0; c < s.c; c++) px[c] += p[c];
        } else {
          for (int64_t g = 0; g < s.groups; g++) {
            const float* p = src + (g * khw + tap) * S;
            float* q = px + g * S;
            for (int64_t j = 0; j < S; j++) q[j] += p[j];
          }
        }
      }
    }
  }
}

static void col2imImage(const float* cols, float* dx, const ConvShape& s, int64_t img) {
  for (int64_t iy = 0; iy < s.h; iy++) col2imRow(cols, dx, s, img, iy);
}

/** dx[n0.., iy, ix, :] = sum of the patch gradients that read that pixel (a gather, so no races). */
static void col2im(const float* cols, float* dx, const ConvShape& s, int64_t n0, int64_t nb) {
  const int64_t pixelsK = s.oh * s.ow * s.kh * s.kw * s.c;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < nb; i++)
    for (int64_t iy = 0; iy < s.h; iy++) col2imRow(cols + i * pixelsK, dx, s, n0 + i, iy);
}

void conv2dBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s) {
  prefaultOutput(dx, (size_t)(s.n * s.h * s.w * s.c));
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, K = s.kh * s.kw * s.c, Kg = s.kh * s.kw * S;
  if (isPointwise(s) && s.groups == 1) {
    sgemm(false, true, s.n * s.h * s.w, s.c, s.cout, dy, s.cout, w, s.cout, 0.0f, dx, s.c);
    return;
  }
  const int64_t pixels = s.oh * s.ow;
  if (s.n > 1 && pixels * K <= kImageColsFloats) {
    // One image at a time per thread: its patch gradients (dy_img · wᵀ) stay in L2 for col2im.
    const int t = threads();
    float* cols = scratch(0, (size_t)t * pixels * K);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1)
    for (int64_t i = 0; i < s.n; i++) {
      float* mine = cols + (size_t)omp_get_thread_num() * pixels * K;
      const float* g0 = dy + i * pixels * s.cout;
      if (s.groups == 1) {
        sgemm(false, true, pixels, K, s.cout, g0, s.cout, w, s.cout, 0.0f, mine, K);
      } else {
        for (int64_t g = 0; g < s.groups; g++)
          sgemm(false, true, pixels, Kg, O, g0 + g * O, s.cout, w + g * O, s.cout, 0.0f, mine + g * Kg, K);
      }
      col2imImage(mine, dx, s, i);
    }
    return;
  }
  if (s.sh == 1 && s.sw == 1) {
    // dx = conv(dy, w') with w'[kh-1-ky, kw-1-kx, o, g*S+s] = w[ky, kx, s, g*O+o] (grouped:
    // group g reads dy's channels g*O.. and writes dx's g*S..) and padding k-1-p.
    const int64_t khw = s.kh * s.kw;
    float* wf = scratch(2, (size_t)(khw * O * s.c));
    for (int64_t tap = 0; tap < khw; tap++) {
      const float* src = w + tap * S * s.cout;
      float* dst = wf + (khw - 1 - tap) * O * s.c;
      for (int64_t g = 0; g < s.groups; g++)
        for (int64_t o = 0; o < O; o++)
          for (int64_t j = 0; j < S; j++) dst[o * s.c + g * S + j] = src[j * s.cout + g * O + o];
    }
    ConvShape f;
    f.n = s.n; f.h = s.oh; f.w = s.ow; f.c = s.cout;
    f.kh = s.kh; f.kw = s.kw;
    f.oh = s.h; f.ow = s.w; f.cout = s.c;
    f.sh = 1; f.sw = 1;
    f.pt = s.kh - 1 - s.pt; f.pl = s.kw - 1 - s.pl;
    f.groups = s.groups;
    forwardBlocked(dy, wf, dx, f);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(s.n, kColsBudget / std::max<int64_t>(pixels * K, 1)));
  float* cols = scratch(0, chunk * pixels * K);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.n - n0), rows = nb * pixels;
    const float* g0 = dy + n0 * pixels * s.cout;
    if (s.groups == 1) {
      sgemm(false, true, rows, K, s.cout, g0, s.cout, w, s.cout, 0.0f, cols, K);
    } else {
#pragma omp parallel for schedule(dynamic)
      for (int64_t g = 0; g < s.groups; g++)
        sgemm(false, true, rows, Kg, O, g0 + g * O, s.cout, w + g * O, s.cout, 0.0f, cols + g * Kg, K);
    }
    col2im(cols, dx, s, n0, nb);
  }
}

// ---- backprop-filter --------------------------------------------------------------------

/** dw (+)= patchesᵀ · dy over one block of rows, group by group. */
static void blockFilterGemm(const float* patches, int64_t K, const float* g, int64_t rows, float* dw, float beta,
                            const ConvShape& s) {
  if (s.groups == 1) {
    sgemm(true, false, K, s.cout, rows, patches, K, g, s.cout, beta, dw, s.cout);
    return;
  }
  const int64_t O = s.cout / s.groups, Kg = K / s.groups;
  for (int64_t grp = 0; grp < s.groups; grp++)
    sgemm(true, false, Kg, O, rows, patches + grp * Kg, K, g + grp * O, s.cout, beta, dw + grp * O, s.cout);
}

void conv2dBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const int64_t K = s.kh * s.kw * s.c, rows = s.n * s.oh * s.ow, outSize = K * (s.cout / s.groups);
  const bool direct = isPointwise(s);
  // Long blocks: the output (K × cout) is reloaded once per block.
  int64_t rb = std::max<int64_t>(blockRows(K, rows), std::min<int64_t>(rows, 256));
  const int64_t blocks = (rows + rb - 1) / rb;
  const int t = (int)std::min<int64_t>(threads(), blocks);
  float* cols = direct ? nullptr : scratch(0, (size_t)t * rb * K);
  float* parts = t > 1 ? scratch(1, (size_t)(t - 1) * outSize) : nullptr;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int me = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = me == 0 ? dw : parts + (size_t)(me - 1) * outSize;  // thread 0 sums straight into dw
    bool first = true;
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
      const float* patches = x + r0 * K;
      if (!direct) {
        float* mine = cols + (size_t)me * rb * K;
        im2colRows(x, mine, s, r0, r1);
        patches = mine;
      }
      blockFilterGemm(patches, K, dy + r0 * s.cout, r1 - r0, acc, first ? 0.0f : 1.0f, s);
      first = false;
    }
    if (first) std::memset(acc, 0, outSize * sizeof(float));
    if (nt > 1) {
#pragma omp barrier
#pragma omp for schedule(static)
      for (int64_t j = 0; j < outSize; j++) {
        float v = dw[j];
        for (int p = 1; p < nt; p++) v += parts[(size_t)(p - 1) * outSize + j];
        dw[j] = v;
      }
    }
  }
}

}  // namespace sf
