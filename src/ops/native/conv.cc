// Ordinary and grouped 2-D convolution (NHWC), forward and both backprops.
// Ordinary convs (groups = 1) on AVX-512 CPUs run as implicit GEMM, with no patch
// matrix: the input is zero-padded once, the filter is packed once per call into
// panels of 64 output channels, and a register tile of 24 accumulators (6 pixels ×
// 64 channels, 12 × 32, 24 × 16) reads each pixel's window straight from the padded
// input through a pointer per pixel, so any kernel size, stride and padding read the
// same way. K (taps × input channels) runs in chunks of 128 rows so one chunk of a
// panel (32 KB) stays in L1 while a unit of 96 pixels sweeps it. Against the old
// im2col blocks + single-threaded OpenBLAS sgemm per block, this drops the patch
// copies and, above all, OpenBLAS's per-call packing of the whole K×cout filter for
// every 128-row block (3×3, 256 → 256 at 14²: 1.2–1.3× the GEMM rate per CPU-second).
// Backprop-input runs the same kernel on dy, one stride phase at a time: input
// pixels iy ≡ (qy − pt) mod sh are reached only by taps ky ≡ qy, and over them dx is
// a stride-1 conv of dy with those taps flipped and transposed, which the packing
// reads in place (WeightView); each phase writes its pixels of dx directly (OutView).
// Convs with fewer than 64 outputs (for backprop-input: inputs) and strided 1×1
// backprop-input keep im2col / GEMM + col2im (faster there, measured). SHARDFACE_CONV_IM2COL=1 forces the im2col path, which CPUs
// without AVX-512 take:
// im2col + GEMM blocked over output rows: each thread takes a block of output pixels,
// writes that block's patch matrix (small enough to stay in its L2) and multiplies
// it by a single-threaded sgemm (OpenBLAS runs single-threaded inside an OpenMP
// region), so the patches never travel through L3/DRAM and no thread waits for
// another. Groups share one patch row laid out [g][kh][kw][s] (s < c/groups), so
// group g's patch matrix is a strided view (lda = kh*kw*c) and its filter slice
// w[:, :, :, g*O:(g+1)*O] is a strided view (ldb = cout).
// Backprop-input takes one image per thread (dy_img · wᵀ, then a race-free col2im
// while the patch gradients are still in L2); images too big for that, with stride
// 1, run as the forward conv of dy with the flipped, transposed filter.
// Backprop-filter (every CPU) gives each thread its own partial dw over its im2col
// blocks and sums them at the end; there OpenBLAS's packing is amortised over
// 256+ rows and it already runs near the GEMM peak.
// Pointwise (1×1, stride 1) convs without AVX-512 have nothing to copy: the NHWC
// buffer is the patch matrix, and the forward and backprop-input run blocked the
// same way straight on it. Groups with few output channels (VarGFaceNet's 16 per
// group) run through a small AVX-512 kernel of our own (narrowGemm, narrowGemmT,
// forwardImplicit, filterImplicit): OpenBLAS's per-call packing costs more than the
// multiply at N = 16, K = 72.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
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

// ---- narrow GEMMs for grouped convs (AVX-512) --------------------------------------------

#if defined(__x86_64__) && defined(__GNUC__)
#define SF_AVX512 __attribute__((target("avx512f")))
#define SF_AVX512_INLINE __attribute__((target("avx512f"), always_inline)) inline
static bool hasAvx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

/** c[R rows, 16 lanes (mask)] = a[R rows, k] · b[k, 16 lanes]: one accumulator per row, b's row loaded once per k. */
template <int R>
SF_AVX512_INLINE void narrowTile(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                                 int64_t k, __mmask16 mask) {
  __m512 acc[R];
  for (int i = 0; i < R; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < k; j++) {
    const __m512 bv = _mm512_maskz_loadu_ps(mask, b + j * ldb);
    for (int i = 0; i < R; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * lda + j]), bv, acc[i]);
  }
  for (int i = 0; i < R; i++) _mm512_mask_storeu_ps(c + i * ldc, mask, acc[i]);
}

/** c[m, n] = a[m, k] · b[k, n] (row-major, leading dimensions lda/ldb/ldc), single-threaded. */
SF_AVX512 static void narrowGemm(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                                 int64_t m, int64_t n, int64_t k) {
  for (int64_t o = 0; o < n; o += 16) {
    const __mmask16 mask = n - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - o)) - 1);
    int64_t r = 0;
    for (; r + 12 <= m; r += 12) narrowTile<12>(a + r * lda, lda, b + o, ldb, c + r * ldc + o, ldc, k, mask);
    for (; r + 4 <= m; r += 4) narrowTile<4>(a + r * lda, lda, b + o, ldb, c + r * ldc + o, ldc, k, mask);
    for (; r < m; r++) narrowTile<1>(a + r * lda, lda, b + o, ldb, c + r * ldc + o, ldc, k, mask);
  }
}

/** d[T rows of k, 16 lanes] (+)= Σ_r a[r, T columns]ᵀ · g[r, 16 lanes]: the filter gradient of T patch columns. */
template <int T>
SF_AVX512_INLINE void narrowTileT(const float* a, int64_t lda, const float* g, int64_t ldg, float* d, int64_t ldd,
                                  int64_t rows, bool accumulate, __mmask16 mask) {
  __m512 acc[T];
  for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; r++) {
    const __m512 gv = _mm512_maskz_loadu_ps(mask, g + r * ldg);
    const float* ar = a + r * lda;
    for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(ar[t]), gv, acc[t]);
  }
  for (int t = 0; t < T; t++) {
    float* dt = d + t * ldd;
    const __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dt), acc[t]) : acc[t];
    _mm512_mask_storeu_ps(dt, mask, v);
  }
}

/** d[k, n] = aᵀ · g (+ d when accumulate), a [rows, k], g [rows, n], single-threaded. */
SF_AVX512 static void narrowGemmT(const float* a, int64_t lda, const float* g, int64_t ldg, float* d, int64_t ldd,
                                  int64_t rows, int64_t n, int64_t k, bool accumulate) {
  for (int64_t o = 0; o < n; o += 16) {
    const __mmask16 mask = n - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - o)) - 1);
    int64_t j = 0;
    for (; j + 24 <= k; j += 24) narrowTileT<24>(a + j, lda, g + o, ldg, d + j * ldd + o, ldd, rows, accumulate, mask);
    for (; j + 8 <= k; j += 8) narrowTileT<8>(a + j, lda, g + o, ldg, d + j * ldd + o, ldd, rows, accumulate, mask);
    for (; j < k; j++) narrowTileT<1>(a + j, lda, g + o, ldg, d + j * ldd + o, ldd, rows, accumulate, mask);
  }
}
#else
static bool hasAvx512() { return false; }
static void narrowGemm(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, int64_t, int64_t) {}
static void narrowGemmT(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool) {}
#endif

/** Per-group output channels at most this many run through narrowGemm (wider ones pack well in OpenBLAS). */
static const int64_t kNarrowMax = 64;

static bool narrow(const ConvShape& s) { return s.groups > 1 && s.cout / s.groups <= kNarrowMax && hasAvx512(); }

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
  const bool small = narrow(s);
  for (int64_t g = 0; g < s.groups; g++) {
    if (small) narrowGemm(patches + g * Kg, K, w + g * O, s.cout, out + g * O, s.cout, rows, O, Kg);
    else sgemm(false, false, rows, O, Kg, patches + g * Kg, K, w + g * O, s.cout, 0.0f, out + g * O, s.cout);
  }
}

/** x zero-padded to [n, hp, wp, c] (hp = (oh-1)·sh + kh, likewise wp): the implicit kernels then index without bounds checks. */
struct Padded {
  const float* x;
  int64_t hp, wp;
};

static Padded padInput(const float* x, const ConvShape& s) {
  const int64_t hp = (s.oh - 1) * s.sh + s.kh, wp = (s.ow - 1) * s.sw + s.kw, C = s.c;
  // Every window already inside x ('valid', 1×1): x itself, its own image size as the strides.
  if (s.pt == 0 && s.pl == 0 && hp <= s.h && wp <= s.w) return {x, s.h, s.w};
  float* xp = scratch(3, (size_t)(s.n * hp * wp * C));
#pragma omp parallel for collapse(2) schedule(static) if (s.n * hp * wp * C > 65536)
  for (int64_t img = 0; img < s.n; img++)
    for (int64_t py = 0; py < hp; py++) {
      float* dst = xp + (img * hp + py) * wp * C;
      const int64_t iy = py - s.pt;
      if (iy < 0 || iy >= s.h) { std::memset(dst, 0, wp * C * sizeof(float)); continue; }
      const float* src = x + (img * s.h + iy) * s.w * C;
      for (int64_t px = 0; px < wp; px++) {
        const int64_t ix = px - s.pl;
        if (ix >= 0 && ix < s.w) std::memcpy(dst + px * C, src + ix * C, C * sizeof(float));
        else std::memset(dst + px * C, 0, C * sizeof(float));
      }
    }
  return {xp, hp, wp};
}


/**
 * The weights of an implicit GEMM as a view of the caller's filter: element (tap t,
 * row k < c, column n < cout) of the conv being run sits at w[tapBase[t] + k·kStride
 * + n·nStride]. The backprops read the forward's filter flipped and transposed this
 * way, so the packing does the flip and no transposed copy is made first.
 */
struct WeightView {
  const float* w;
  const int64_t* tapBase;
  int64_t kStride, nStride;
};

/** Where output pixel (img, oy, ox) of an implicit GEMM goes: y + img·imgStride + oy·rowStride + ox·pixStride. */
struct OutView {
  float* y;
  int64_t imgStride, rowStride, pixStride;
};

static OutView dense(float* y, const ConvShape& s) { return {y, s.oh * s.ow * s.cout, s.ow * s.cout, s.cout}; }

#if defined(__x86_64__) && defined(__GNUC__)
/**
 * R consecutive output pixels of one group's 16-lane slice, read straight from the
 * padded input: a points at the first pixel's window corner (+ g·S), pixels lie sw·c
 * apart, w at tap 0 (+ g·O + o).
 */
template <int R, int kS>
SF_AVX512_INLINE void implicitTile(const float* a, int64_t pixStride, int64_t rowStride, const float* w, float* y,
                                   const ConvShape& s, int64_t sRun, __mmask16 mask) {
  const int64_t S = kS > 0 ? kS : sRun;  // compile-time for the common group widths: the tap loop unrolls
  __m512 acc[R];
  for (int i = 0; i < R; i++) acc[i] = _mm512_setzero_ps();
  for (int64_t ky = 0; ky < s.kh; ky++)
    for (int64_t kx = 0; kx < s.kw; kx++) {
      const float* at = a + ky * rowStride + kx * s.c;
      const float* wt = w + (ky * s.kw + kx) * S * s.cout;
      for (int64_t j = 0; j < S; j++) {
        const __m512 bv = _mm512_maskz_loadu_ps(mask, wt + j * s.cout);
        for (int i = 0; i < R; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(at[i * pixStride + j]), bv, acc[i]);
      }
    }
  for (int i = 0; i < R; i++) _mm512_mask_storeu_ps(y + i * s.cout, mask, acc[i]);
}

/** One output row of one group's 16-lane slice, in tiles of 8, 4 and 1 pixels. */
template <int kS>
SF_AVX512_INLINE void implicitRow(const float* xg, int64_t pixStride, int64_t rowStride, const float* wg, float* yg,
                                  const ConvShape& s, int64_t S, __mmask16 mask) {
  int64_t ox = 0;
  for (; ox + 8 <= s.ow; ox += 8) implicitTile<8, kS>(xg + ox * pixStride, pixStride, rowStride, wg, yg + ox * s.cout, s, S, mask);
  for (; ox + 4 <= s.ow; ox += 4) implicitTile<4, kS>(xg + ox * pixStride, pixStride, rowStride, wg, yg + ox * s.cout, s, S, mask);
  for (; ox < s.ow; ox++) implicitTile<1, kS>(xg + ox * pixStride, pixStride, rowStride, wg, yg + ox * s.cout, s, S, mask);
}

/** Grouped forward conv with no patch matrix: each thread takes whole output rows (img, oy). */
SF_AVX512 static void forwardImplicit(const float* x, const float* w, float* y, const ConvShape& s) {
  const Padded p = padInput(x, s);
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, rowStride = p.wp * s.c, pixStride = s.sw * s.c;
  const int t = threads();
#pragma omp parallel for schedule(static) num_threads(t) if (t > 1)
  for (int64_t row = 0; row < s.n * s.oh; row++) {
    const int64_t img = row / s.oh, oy = row % s.oh;
    const float* xr = p.x + (img * p.hp + oy * s.sh) * rowStride;
    float* yr = y + row * s.ow * s.cout;
    for (int64_t g = 0; g < s.groups; g++)
      for (int64_t o = 0; o < O; o += 16) {
        const __mmask16 mask = O - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (O - o)) - 1);
        if (S == 8) implicitRow<8>(xr + g * S, pixStride, rowStride, w + g * O + o, yr + g * O + o, s, S, mask);
        else if (S == 16) implicitRow<16>(xr + g * S, pixStride, rowStride, w + g * O + o, yr + g * O + o, s, S, mask);
        else implicitRow<0>(xr + g * S, pixStride, rowStride, w + g * O + o, yr + g * O + o, s, S, mask);
      }
  }
}

/**
 * d[T patch columns, 16 lanes] (+)= Σ over output rows [row0, row1) and their pixels of
 * x's T columns at one tap (a: padded input + tap offset + g·S + j) times dy's lanes (g: + g·O + o).
 */
template <int T>
SF_AVX512_INLINE void implicitFilterTile(const float* a, const float* g, float* d, const ConvShape& s, const Padded& p,
                                         int64_t row0, int64_t row1, bool accumulate, __mmask16 mask) {
  __m512 acc[T];
  for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
  const int64_t pixStride = s.sw * s.c;
  for (int64_t row = row0; row < row1; row++) {
    const int64_t img = row / s.oh, oy = row % s.oh;
    const float* ar = a + (img * p.hp + oy * s.sh) * p.wp * s.c;
    const float* gr = g + row * s.ow * s.cout;
    for (int64_t ox = 0; ox < s.ow; ox++) {
      const __m512 gv = _mm512_maskz_loadu_ps(mask, gr + ox * s.cout);
      const float* ap = ar + ox * pixStride;
      for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(ap[t]), gv, acc[t]);
    }
  }
  for (int t = 0; t < T; t++) {
    float* dt = d + t * s.cout;
    _mm512_mask_storeu_ps(dt, mask, accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dt), acc[t]) : acc[t]);
  }
}

/** Output rows per filter-gradient block: its dy rows and input window stay in L2 across all groups and taps. */
static const int64_t kFilterBlockPixels = 256;

/** Grouped backprop-filter with no patch matrix; each thread sums its blocks into its own partial dw. */
SF_AVX512 static void filterImplicit(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const Padded p = padInput(x, s);
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, outSize = s.kh * s.kw * S * s.cout;
  const int64_t rows = s.n * s.oh, rb = std::max<int64_t>(1, kFilterBlockPixels / std::max<int64_t>(s.ow, 1));
  const int64_t blocks = (rows + rb - 1) / rb;
  const int t = (int)std::min<int64_t>(threads(), blocks);
  float* parts = t > 1 ? scratch(1, (size_t)(t - 1) * outSize) : nullptr;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int me = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = me == 0 ? dw : parts + (size_t)(me - 1) * outSize;
    bool first = true;
#pragma omp for schedule(static) nowait  // a fixed share per thread: the partial sums, and so dw, are the same every run
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
      for (int64_t g = 0; g < s.groups; g++)
        for (int64_t tap = 0; tap < s.kh * s.kw; tap++) {
          const float* at = p.x + ((tap / s.kw) * p.wp + tap % s.kw) * s.c + g * S;
          for (int64_t o = 0; o < O; o += 16) {
            const __mmask16 mask = O - o >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (O - o)) - 1);
            const float* gg = dy + g * O + o;
            float* d = acc + tap * S * s.cout + g * O + o;
            int64_t j = 0;
            for (; j + 24 <= S; j += 24) implicitFilterTile<24>(at + j, gg, d + j * s.cout, s, p, r0, r1, !first, mask);
            for (; j + 8 <= S; j += 8) implicitFilterTile<8>(at + j, gg, d + j * s.cout, s, p, r0, r1, !first, mask);
            for (; j < S; j++) implicitFilterTile<1>(at + j, gg, d + j * s.cout, s, p, r0, r1, !first, mask);
          }
        }
      first = false;
    }
    if (first) std::memset(acc, 0, outSize * sizeof(float));
    if (nt > 1) {
#pragma omp barrier
#pragma omp for schedule(static)
      for (int64_t j = 0; j < outSize; j++) {
        float v = dw[j];
        for (int q = 1; q < nt; q++) v += parts[(size_t)(q - 1) * outSize + j];
        dw[j] = v;
      }
    }
  }
}

// ---- ordinary convs as implicit GEMM (AVX-512) --------------------------------------------

/** Output channels per packed weight panel: 4 zmm vectors, so a 6-pixel tile holds 24 accumulators (of 32 registers). */
static const int64_t kPanel = 64;
/** Output pixels per work unit: the unit's input window stays in L2 while one panel's weights do too. */
static const int64_t kUnitPixels = 96;

/**
 * y[R pixels, NV·16 channels (mask on the last vector)] = Σ over taps and input channels
 * of x (px[i] + tapOff[t] + j, straight from the padded input) times the packed panel
 * (wk [taps·C][kPanel], zero past cout). The weights' row is loaded once per R pixels,
 * each x value is one embedded broadcast.
 */
template <int R, int NV>
SF_AVX512_INLINE void igemmTile(const float* const* px, const int64_t* tapOff, int64_t t0, int64_t t1, int64_t c0,
                                int64_t c1, int64_t C, const float* wp, float* const* yp, __mmask16 lastMask,
                                bool accumulate) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int i = 0; i < R; i++) {
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; v++) acc[i][v] = accumulate ? _mm512_loadu_ps(yp[i] + 16 * v) : _mm512_setzero_ps();
    acc[i][NV - 1] = accumulate ? _mm512_maskz_loadu_ps(lastMask, yp[i] + 16 * (NV - 1)) : _mm512_setzero_ps();
  }
  const float* a[R];
  for (int64_t t = t0; t < t1; t++) {
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) a[i] = px[i] + tapOff[t];
    const float* wk = wp + (t * C + c0) * kPanel;
    for (int64_t j = c0; j < c1; j++, wk += kPanel) {
      __m512 b[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(wk + 16 * v);
#pragma GCC unroll 8
      for (int i = 0; i < R; i++) {
        const __m512 ai = _mm512_set1_ps(a[i][j]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, b[v], acc[i][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; i++) {
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; v++) _mm512_storeu_ps(yp[i] + 16 * v, acc[i][v]);
    _mm512_mask_storeu_ps(yp[i] + 16 * (NV - 1), lastMask, acc[i][NV - 1]);
  }
}

/** Weight rows (taps × channels) per chunk: one chunk of a panel (32 KB) stays in L1 across a unit's tiles. */
static const int64_t kChunkK = 128;

/** One unit's rows × one panel, chunk by chunk of K (taps grouped when c is small, channels split when it is large). */
template <int NV>
SF_AVX512_INLINE void igemmRows(const float* const* px, int64_t rows, const int64_t* tapOff, int64_t taps, int64_t C,
                                const float* wp, float* const* yp, __mmask16 lastMask) {
  const int64_t tapStep = C >= kChunkK ? 1 : std::max<int64_t>(1, kChunkK / std::max<int64_t>(C, 1));
  const int64_t cStep = C >= kChunkK ? kChunkK : C;
  bool first = true;
  for (int64_t t0 = 0; t0 < taps; t0 += tapStep) {
    const int64_t t1 = std::min(taps, t0 + tapStep);
    for (int64_t c0 = 0; c0 < C; c0 += cStep, first = false) {
      const int64_t c1 = std::min(C, c0 + cStep);
      int64_t r = 0;
      // Tiles of 24 accumulators whatever the panel's width: narrow panels take more pixels per tile.
      constexpr int kWide = 24 / NV;
      for (; r + kWide <= rows; r += kWide)
        igemmTile<kWide, NV>(px + r, tapOff, t0, t1, c0, c1, C, wp, yp + r, lastMask, !first);
      if (kWide > 6)
        for (; r + 6 <= rows; r += 6) igemmTile<6, NV>(px + r, tapOff, t0, t1, c0, c1, C, wp, yp + r, lastMask, !first);
      const float* const* pr = px + r;
      float* const* yr = yp + r;
      switch (rows - r) {
        case 5: igemmTile<5, NV>(pr, tapOff, t0, t1, c0, c1, C, wp, yr, lastMask, !first); break;
        case 4: igemmTile<4, NV>(pr, tapOff, t0, t1, c0, c1, C, wp, yr, lastMask, !first); break;
        case 3: igemmTile<3, NV>(pr, tapOff, t0, t1, c0, c1, C, wp, yr, lastMask, !first); break;
        case 2: igemmTile<2, NV>(pr, tapOff, t0, t1, c0, c1, C, wp, yr, lastMask, !first); break;
        case 1: igemmTile<1, NV>(pr, tapOff, t0, t1, c0, c1, C, wp, yr, lastMask, !first); break;
        default: break;
      }
    }
  }
}

/**
 * Ordinary (groups = 1) forward conv with no patch matrix: the weights are packed once
 * into panels of kPanel output channels ([panel][tap][c][kPanel], zero-filled past
 * cout), the input is zero-padded once, and each work unit (one panel × kUnitPixels
 * output pixels) runs the register-blocked tile over pixel pointers into the padded
 * input, so any stride and padding reads the same way and OpenBLAS's per-call packing
 * of the weights (the whole K×cout matrix for every block) disappears.
 */
SF_AVX512 static void forwardImplicitDense(const float* x, const WeightView& wv, const OutView& out, const ConvShape& s) {
  const int64_t C = s.c, taps = s.kh * s.kw, K = taps * C, N = s.cout;
  const int64_t panels = (N + kPanel - 1) / kPanel, rows = s.n * s.oh * s.ow;
  float* wp = scratch(0, (size_t)(panels * K * kPanel));
  const int nt = threads();
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1 && K * N > 65536)
  for (int64_t p = 0; p < panels; p++)
    for (int64_t t = 0; t < taps; t++) {
      const int64_t o0 = p * kPanel, width = std::min(kPanel, N - o0);
      const float* src = wv.w + wv.tapBase[t] + o0 * wv.nStride;
      float* d = wp + (p * K + t * C) * kPanel;
      for (int64_t k = 0; k < C; k++, d += kPanel) {
        const float* sk = src + k * wv.kStride;
        if (wv.nStride == 1) std::memcpy(d, sk, width * sizeof(float));
        else for (int64_t o = 0; o < width; o++) d[o] = sk[o * wv.nStride];
        if (width < kPanel) std::memset(d + width, 0, (kPanel - width) * sizeof(float));
      }
    }
  const Padded pd = padInput(x, s);
  int64_t tapOff[64];
  std::vector<int64_t> tapVec;
  int64_t* offs = tapOff;
  if (taps > 64) {
    tapVec.resize(taps);
    offs = tapVec.data();
  }
  for (int64_t t = 0; t < taps; t++) offs[t] = ((t / s.kw) * pd.wp + t % s.kw) * C;
  const int64_t units = (rows + kUnitPixels - 1) / kUnitPixels;
  const int t = threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1)
  for (int64_t u = 0; u < panels * units; u++) {
    const int64_t p = u / units, r0 = (u % units) * kUnitPixels, r1 = std::min(rows, r0 + kUnitPixels);
    const float* px[kUnitPixels];
    for (int64_t r = r0; r < r1; r++) {
      const int64_t img = r / (s.oh * s.ow), oy = (r / s.ow) % s.oh, ox = r % s.ow;
      px[r - r0] = pd.x + ((img * pd.hp + oy * s.sh) * pd.wp + ox * s.sw) * C;
    }
    const int64_t o0 = p * kPanel, width = std::min(kPanel, N - o0), nv = (width + 15) / 16;
    const int64_t lastLanes = width - (nv - 1) * 16;
    const __mmask16 mask = lastLanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lastLanes) - 1);
    const float* wk = wp + p * K * kPanel;
    float* yp[kUnitPixels];
    for (int64_t r = r0; r < r1; r++) {
      const int64_t img = r / (s.oh * s.ow), oy = (r / s.ow) % s.oh, ox = r % s.ow;
      yp[r - r0] = out.y + img * out.imgStride + oy * out.rowStride + ox * out.pixStride + o0;
    }
    switch (nv) {
      case 4: igemmRows<4>(px, r1 - r0, offs, taps, C, wk, yp, mask); break;
      case 3: igemmRows<3>(px, r1 - r0, offs, taps, C, wk, yp, mask); break;
      case 2: igemmRows<2>(px, r1 - r0, offs, taps, C, wk, yp, mask); break;
      default: igemmRows<1>(px, r1 - r0, offs, taps, C, wk, yp, mask); break;
    }
  }
}
#else
static void forwardImplicit(const float*, const float*, float*, const ConvShape&) {}
static void filterImplicit(const float*, const float*, float*, const ConvShape&) {}
static void forwardImplicitDense(const float*, const WeightView&, const OutView&, const ConvShape&) {}
#endif

/** Fewest output channels for the implicit GEMM. */
static const int64_t kPanelMin = 64;

/** Ordinary convs with a window (not 1×1 stride 1: that one is a plain GEMM already) run as implicit GEMM. */
static bool implicitDense(const ConvShape& s) {
  // Below one full panel of outputs the tile wastes lanes and im2col + OpenBLAS wins (measured at 32).
  if (s.groups != 1 || s.cout < kPanelMin || !hasAvx512()) return false;
  const char* env = getenv("SHARDFACE_CONV_IM2COL");
  return !(env && env[0] == '1');
}

/** Forward conv of any shape, blocked (see the top of the file). */
static void forwardBlocked(const float* x, const float* w, float* y, const ConvShape& s) {
  if (narrow(s)) {
    forwardImplicit(x, w, y, s);
    return;
  }
  if (implicitDense(s)) {
    // The filter as stored: tap t's rows start at t·c·cout.
    std::vector<int64_t> base(s.kh * s.kw);
    for (size_t t = 0; t < base.size(); t++) base[t] = (int64_t)t * s.c * s.cout;
    forwardImplicitDense(x, {w, base.data(), s.cout, 1}, dense(y, s), s);
    return;
  }
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

/**
 * Backprop-input of an ordinary conv as forward implicit GEMMs of dy, one per stride
 * phase (qy, qx): the input pixels iy ≡ (qy − pt) mod sh, ix likewise, are reached
 * only by taps ky ≡ qy, kx ≡ qx, and over those pixels dx is a stride-1 conv of dy
 * with those taps flipped and each tap's [c, cout] block transposed (read so by the
 * packing), padded so that tap m reads dy row j + b − m. Stride 1 is the single phase
 * is the single phase; each phase writes its pixels of dx in place (rows sh apart).
 */
static void backpropInputImplicit(const float* dy, const float* w, float* dx, const ConvShape& s) {
  const int64_t C = s.c, N = s.cout;
  for (int64_t qy = 0; qy < s.sh; qy++)
    for (int64_t qx = 0; qx < s.sw; qx++) {
      const int64_t iy0 = (((qy - s.pt) % s.sh) + s.sh) % s.sh, ix0 = (((qx - s.pl) % s.sw) + s.sw) % s.sw;
      const int64_t hq = iy0 < s.h ? (s.h - iy0 + s.sh - 1) / s.sh : 0, wq = ix0 < s.w ? (s.w - ix0 + s.sw - 1) / s.sw : 0;
      if (hq == 0 || wq == 0) continue;
      const int64_t my = qy < s.kh ? (s.kh - qy + s.sh - 1) / s.sh : 0, mx = qx < s.kw ? (s.kw - qx + s.sw - 1) / s.sw : 0;
      if (my == 0 || mx == 0) {  // no tap reaches these pixels
#pragma omp parallel for schedule(static) if (s.n * hq * wq * C > 65536)
        for (int64_t r = 0; r < s.n * hq; r++) {
          float* row = dx + (((r / hq) * s.h + iy0 + (r % hq) * s.sh) * s.w + ix0) * C;
          for (int64_t i = 0; i < wq; i++) std::memset(row + i * s.sw * C, 0, C * sizeof(float));
        }
        continue;
      }
      const int64_t by = (iy0 + s.pt - qy) / s.sh, bx = (ix0 + s.pl - qx) / s.sw;
      std::vector<int64_t> base(my * mx);
      for (int64_t a = 0; a < my; a++)
        for (int64_t b = 0; b < mx; b++) {
          const int64_t ky = qy + s.sh * (my - 1 - a), kx = qx + s.sw * (mx - 1 - b);
          base[a * mx + b] = (ky * s.kw + kx) * C * N;
        }
      ConvShape f;
      f.n = s.n; f.h = s.oh; f.w = s.ow; f.c = N;
      f.kh = my; f.kw = mx;
      f.oh = hq; f.ow = wq; f.cout = C;
      f.sh = 1; f.sw = 1;
      f.pt = my - 1 - by; f.pl = mx - 1 - bx;
      f.groups = 1;
      // Row k of this conv is dy's channel o (w's column), its column n is dx's channel (w's row).
      const WeightView wv{w, base.data(), 1, N};
      // The phase's pixels straight into dx: rows sh apart, pixels sw apart, from (iy0, ix0).
      forwardImplicitDense(dy, wv, {dx + (iy0 * s.w + ix0) * C, s.h * s.w * C, s.sh * s.w * C, s.sw * C}, f);
    }
}

void conv2dBackpropInput(const float* dy, const float* w, float* dx, const ConvShape& s) {
  prefaultOutput(dx, (size_t)(s.n * s.h * s.w * s.c));
  const int64_t S = s.c / s.groups, O = s.cout / s.groups, K = s.kh * s.kw * s.c, Kg = s.kh * s.kw * S;
  // Strided: per phase a small GEMM plus its own padded copy of dy; measured, that loses
  // to GEMM + col2im below 64 input channels and for 1×1 (a gather of mostly zeros).
  const bool strided = s.sh > 1 || s.sw > 1;
  if (implicitDense(s) && s.c >= kPanelMin && (!strided || s.kh * s.kw > 1)) {
    backpropInputImplicit(dy, w, dx, s);
    return;
  }
  if (isPointwise(s) && s.groups == 1) {
    // dx = dy · wᵀ straight on the NHWC buffers, in row blocks as the forward runs.
    const int64_t rows = s.n * s.h * s.w, rb = blockRows(std::max(s.c, s.cout), rows), blocks = (rows + rb - 1) / rb;
    const int t = threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t r0 = b * rb, r1 = std::min(rows, r0 + rb);
      sgemm(false, true, r1 - r0, s.c, s.cout, dy + r0 * s.cout, s.cout, w, s.cout, 0.0f, dx + r0 * s.c, s.c);
    }
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
  const bool small = narrow(s);
  for (int64_t grp = 0; grp < s.groups; grp++) {
    if (small) narrowGemmT(patches + grp * Kg, K, g + grp * O, s.cout, dw + grp * O, s.cout, rows, O, Kg, beta != 0.0f);
    else sgemm(true, false, Kg, O, rows, patches + grp * Kg, K, g + grp * O, s.cout, beta, dw + grp * O, s.cout);
  }
}

void conv2dBackpropFilter(const float* x, const float* dy, float* dw, const ConvShape& s) {
  if (narrow(s)) {
    filterImplicit(x, dy, dw, s);
    return;
  }
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
#pragma omp for schedule(static) nowait  // a fixed share per thread: the partial sums, and so dw, are the same every run
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
