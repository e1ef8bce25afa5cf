// Ordinary and grouped 2-D convolution (NHWC) as im2col + GEMM, forward and both
// backprops. Groups share one im2col buffer laid out [row][group][kh][kw][s]
// (s < c/groups), so group g's patch matrix is a strided view (lda = kh*kw*c)
// and its filter slice w[:, :, :, g*O:(g+1)*O] is a strided view (ldb = cout):
// nothing but the patches is ever copied.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace sf {

/** im2col scratch is capped near this many floats; larger batches run in chunks of images. */
static const int64_t kColsBudget = (int64_t)8 << 20;

static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
              1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static bool isPointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.oh == s.h && s.ow == s.w &&
         s.groups == 1;
}

/** Images per chunk so the patch matrix stays within budget. */
static int64_t imagesPerChunk(const ConvShape& s) {
  const int64_t perImage = s.oh * s.ow * s.kh * s.kw * s.c;
  return std::max<int64_t>(1, std::min<int64_t>(s.n, kColsBudget / std::max<int64_t>(perImage, 1)));
}

/** Patches of images [n0, n0+nb): cols[row][g][kh][kw][s]. */
static void im2col(const float* x, float* cols, const ConvShape& s, int64_t n0, int64_t nb) {
  const int64_t S = s.c / s.groups, K = s.kh * s.kw * s.c, khw = s.kh * s.kw;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t oy = 0; oy < s.oh; oy++) {
      const float* img = x + (n0 + i) * s.h * s.w * s.c;
      for (int64_t ox = 0; ox < s.ow; ox++) {
        float* dst = cols + ((i * s.oh + oy) * s.ow + ox) * K;
        for (int64_t ky = 0; ky < s.kh; ky++) {
          const int64_t iy = oy * s.sh - s.pt + ky;
          for (int64_t kx = 0; kx < s.kw; kx++) {
            const int64_t ix = ox * s.sw - s.pl + kx;
            const bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
            const float* src = img + (iy * s.w + ix) * s.c;
            const int64_t tap = ky * s.kw + kx;
            if (s.groups == 1) {
              if (inside) std::memcpy(dst + tap * s.c, src, s.c * sizeof(float));
              else std::memset(dst + tap * s.c, 0, s.c * sizeof(float));
            } else {
              for (int64_t g = 0; g < s.groups; g++) {
                float* d = dst + (g * khw + tap) * S;
                if (inside) std::memcpy(d, src + g * S, S * sizeof(float));
                else std::memset(d, 0, S * sizeof(float));
              }
            }
          }
        }
      }
    }
  }
}

/** dx[n0.., iy, ix, :] = sum of the patch gradients that read that pixel (a gather, so no races). */
static void col2im(const float* cols, float* dx, const ConvShape& s, int64_t n0, int64_t nb) {
  const int64_t S = s.c / s.groups, K = s.kh * s.kw * s.c, khw = s.kh * s.kw;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t iy = 0; iy < s.h; iy++) {
      float* rowOut = dx + ((n0 + i) * s.h + iy) * s.w * s.c;
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
            const float* src = cols + ((i * s.oh + oy) * s.ow + ox) * K;
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
  }
}

void conv2d(const float* x, const float* w, float* y, const ConvShape& s) {
  if (isPointwise(s)) {
    sgemm(false, false, s.n * s.h * s.w, s.cout, s.c, x, s.c, w, s.cout, 0.0f, y, s.cout);
    return;
  }
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, K = s.kh * s.kw * s.c, Kg = s.kh * s.kw * S;
  const int64_t chunk = imagesPerChunk(s), pixels = s.oh * s.ow;
  float* cols = scratch(0, chunk * pixels * K);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.n - n0), rows = nb * pixels;
    im2col(x, cols, s, n0, nb);
    float* out = y + n0 * pixels * s.cout;
    if (s.groups == 1) {
      sgemm(false, false, rows, s.cout, K, cols, K, w, s.cout, 0.0f, out, s.cout);
    } else {
#pragma omp parallel for schedule(dynamic)
      for (int64_t g = 0; g < s.groups; g++)
        sgemm(false, false, rows, O, Kg, cols + g * Kg, K, w + g * O, s.cout, 0.0f, out + g * O, s.cout);
    }
  }
}

void conv2dBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s) {
  if (isPointwise(s)) {
    sgemm(false, true, s.n * s.h * s.w, s.c, s.cout, dy, s.cout, w, s.cout, 0.0f, dx, s.c);
    return;
  }
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, K = s.kh * s.kw * s.c, Kg = s.kh * s.kw * S;
  const int64_t chunk = imagesPerChunk(s), pixels = s.oh * s.ow;
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

/**
 * dw (+)= patchesᵀ · dy over `rows` rows. The inner dimension (rows) is long and the
 * output small, so with several threads each takes a slice of rows into its own
 * partial dw, and the partials are summed.
 */
static void accumulateFilterGrad(const float* patches, int64_t K, const float* g, int64_t rows, float* dw,
                                 const ConvShape& s, bool first) {
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, Kg = s.kh * s.kw * S;
  if (s.groups > 1) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t grp = 0; grp < s.groups; grp++)
      sgemm(true, false, Kg, O, rows, patches + grp * Kg, K, g + grp * O, s.cout, first ? 0.0f : 1.0f, dw + grp * O,
            s.cout);
    return;
  }
  const int t = threads();
  const int64_t outSize = K * s.cout;
  if (t <= 1 || rows < 64 * t) {
    sgemm(true, false, K, s.cout, rows, patches, K, g, s.cout, first ? 0.0f : 1.0f, dw, s.cout);
    return;
  }
  float* parts = scratch(1, (size_t)t * outSize);
#pragma omp parallel num_threads(t)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = rows * i / nt, r1 = rows * (i + 1) / nt;
    sgemm(true, false, K, s.cout, r1 - r0, patches + r0 * K, K, g + r0 * s.cout, s.cout, 0.0f, parts + i * outSize,
          s.cout);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t j = 0; j < outSize; j++) {
      float v = first ? 0.0f : dw[j];
      for (int p = 0; p < nt; p++) v += parts[p * outSize + j];
      dw[j] = v;
    }
  }
}

void conv2dBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  if (isPointwise(s)) {
    accumulateFilterGrad(x, s.c, dy, s.n * s.h * s.w, dw, s, true);
    return;
  }
  const int64_t K = s.kh * s.kw * s.c;
  const int64_t chunk = imagesPerChunk(s), pixels = s.oh * s.ow;
  float* cols = scratch(0, chunk * pixels * K);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.n - n0), rows = nb * pixels;
    im2col(x, cols, s, n0, nb);
    accumulateFilterGrad(cols, K, dy + n0 * pixels * s.cout, rows, dw, s, n0 == 0);
  }
}

}  // namespace sf
