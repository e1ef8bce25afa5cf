// Fused BatchNorm (+PReLU) and PReLU kernels, forward and backward (see norm-act.h).
// x is [rows, c], channels contiguous. Threads split the rows; each keeps its own
// per-channel partial sums (float over blocks of kBlock rows, then double), reduced
// once at the end. Memory-bound: the point is to touch each activation as few times
// as possible (forward: read x twice, write y; backward: read x and dy twice, write dx).
#include "norm-act.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

// The hot loops compiled for AVX2+FMA and for baseline x86-64, picked at run time
// (the pattern of simd.h, copied so this file does not depend on its edits).
#define NA_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) && defined(__GNUC__)
#define NA_AVX2 __attribute__((target("avx2,fma")))
static bool naHasAvx2Fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#define NA_DISPATCH(name, params, args)                      \
  NA_AVX2 static void name##Avx2 params { name##Body args; } \
  static void name##Base params { name##Body args; }         \
  static void name params {                                  \
    if (naHasAvx2Fma()) name##Avx2 args;                     \
    else name##Base args;                                    \
  }
#else
#define NA_DISPATCH(name, params, args) \
  static void name params { name##Body args; }
#endif

namespace sf {
namespace {

/** Rows summed in float before being added to the double accumulators. */
const int64_t kBlock = 32;
/** Below this many elements one thread (a second one costs more to wake than it saves). */
const int64_t kParallelMin = (int64_t)1 << 16;

int threadsFor(int64_t elements) { return elements >= kParallelMin ? std::max(1, threads()) : 1; }

/** z = x·scale + shift: one expression, so forward and backward round it alike. */
NA_INLINE float affine(float x, float scale, float shift) { return x * scale + shift; }

/** s[j] += Σ (x[r,j] − pivot[j]), q[j] += Σ (x[r,j] − pivot[j])² over rows. */
NA_INLINE void statsRowsBody(const float* __restrict x, int64_t rows, int64_t c, const float* __restrict pivot,
                             float* __restrict fs, float* __restrict fq, double* __restrict s, double* __restrict q) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    std::fill(fs, fs + c, 0.0f);
    std::fill(fq, fq + c, 0.0f);
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * c;
      for (int64_t j = 0; j < c; j++) {
        const float d = row[j] - pivot[j];
        fs[j] += d;
        fq[j] += d * d;
      }
    }
    for (int64_t j = 0; j < c; j++) { s[j] += fs[j]; q[j] += fq[j]; }
  }
}
NA_DISPATCH(statsRows, (const float* x, int64_t rows, int64_t c, const float* pivot, float* fs, float* fq, double* s, double* q),
            (x, rows, c, pivot, fs, fq, s, q))

/** y = affine(x), then PReLU when alpha is non-null. */
NA_INLINE void applyRowsBody(const float* __restrict x, float* __restrict y, int64_t rows, int64_t c,
                             const float* __restrict scale, const float* __restrict shift, const float* __restrict alpha) {
  if (alpha) {
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * c;
      float* yr = y + r * c;
      for (int64_t j = 0; j < c; j++) {
        const float z = affine(xr[j], scale[j], shift[j]);
        yr[j] = z < 0.0f ? z * alpha[j] : z;
      }
    }
  } else {
    for (int64_t r = 0; r < rows; r++) {
      const float* xr = x + r * c;
      float* yr = y + r * c;
      for (int64_t j = 0; j < c; j++) yr[j] = affine(xr[j], scale[j], shift[j]);
    }
  }
}
NA_DISPATCH(applyRows, (const float* x, float* y, int64_t rows, int64_t c, const float* scale, const float* shift, const float* alpha),
            (x, y, rows, c, scale, shift, alpha))

/**
 * Backward pass 1: per channel Σg, Σg·x̂ and (alpha) Σ dy·z·[z ≤ 0], where
 * g = dy·PReLU'(z) and x̂ = (x − mean)·rstd.
 */
NA_INLINE void bnGradSumsBody(const float* __restrict x, const float* __restrict dy, int64_t rows, int64_t c,
                              const float* __restrict mean, const float* __restrict rstd, const float* __restrict scale,
                              const float* __restrict shift, const float* __restrict alpha, float* __restrict f0,
                              float* __restrict f1, float* __restrict f2, double* __restrict sg, double* __restrict sgx,
                              double* __restrict sa) {
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    std::fill(f0, f0 + c, 0.0f);
    std::fill(f1, f1 + c, 0.0f);
    if (alpha) {
      std::fill(f2, f2 + c, 0.0f);
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + r * c;
        const float* dr = dy + r * c;
        for (int64_t j = 0; j < c; j++) {
          const float z = affine(xr[j], scale[j], shift[j]);
          const bool pos = z > 0.0f;
          const float g = pos ? dr[j] : dr[j] * alpha[j];
          const float xh = (xr[j] - mean[j]) * rstd[j];
          f0[j] += g;
          f1[j] += g * xh;
          f2[j] += pos ? 0.0f : dr[j] * z;
        }
      }
      for (int64_t j = 0; j < c; j++) sa[j] += f2[j];
    } else {
      for (int64_t r = r0; r < r1; r++) {
        const float* xr = x + r * c;
        const float* dr = dy + r * c;
        for (int64_t j = 0; j < c; j++) {
          const float xh = (xr[j] - mean[j]) * rstd[j];
          f0[j] += dr[j];
          f1[j] += dr[j] * xh;
        }
      }
    }
    for (int64_t j = 0; j < c; j++) { sg[j] += f0[j]; sgx[j] += f1[j]; }
  }
}
NA_DISPATCH(bnGradSums,
            (const float* x, const float* dy, int64_t rows, int64_t c, const float* mean, const float* rstd, const float* scale,
             const float* shift, const float* alpha, float* f0, float* f1, float* f2, double* sg, double* sgx, double* sa),
            (x, dy, rows, c, mean, rstd, scale, shift, alpha, f0, f1, f2, sg, sgx, sa))

/** Backward pass 2: dx = k1·g + k2·x̂ + k3. */
NA_INLINE void bnGradDxBody(const float* __restrict x, const float* __restrict dy, float* __restrict dx, int64_t rows,
                            int64_t c, const float* __restrict mean, const float* __restrict rstd,
                            const float* __restrict scale, const float* __restrict shift, const float* __restrict alpha,
                            const float* __restrict k1, const float* __restrict k2, const float* __restrict k3) {
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * c;
    const float* dr = dy + r * c;
    float* o = dx + r * c;
    if (alpha) {
      for (int64_t j = 0; j < c; j++) {
        const float z = affine(xr[j], scale[j], shift[j]);
        const float g = z > 0.0f ? dr[j] : dr[j] * alpha[j];
        const float xh = (xr[j] - mean[j]) * rstd[j];
        o[j] = k1[j] * g + (k2[j] * xh + k3[j]);
      }
    } else {
      for (int64_t j = 0; j < c; j++) {
        const float xh = (xr[j] - mean[j]) * rstd[j];
        o[j] = k1[j] * dr[j] + (k2[j] * xh + k3[j]);
      }
    }
  }
}
NA_DISPATCH(bnGradDx,
            (const float* x, const float* dy, float* dx, int64_t rows, int64_t c, const float* mean, const float* rstd,
             const float* scale, const float* shift, const float* alpha, const float* k1, const float* k2, const float* k3),
            (x, dy, dx, rows, c, mean, rstd, scale, shift, alpha, k1, k2, k3))

NA_INLINE void preluRowsBody(const float* __restrict x, float* __restrict y, int64_t rows, int64_t c,
                             const float* __restrict alpha) {
  if (c == 1) {
    const float a = alpha[0];
    for (int64_t i = 0; i < rows; i++) y[i] = x[i] < 0.0f ? a * x[i] : x[i];
    return;
  }
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    for (int64_t j = 0; j < c; j++) yr[j] = xr[j] < 0.0f ? alpha[j] * xr[j] : xr[j];
  }
}
NA_DISPATCH(preluRows, (const float* x, float* y, int64_t rows, int64_t c, const float* alpha), (x, y, rows, c, alpha))

NA_INLINE void preluGradRowsBody(const float* __restrict x, const float* __restrict dy, float* __restrict dx, int64_t rows,
                                 int64_t c, const float* __restrict alpha, float* __restrict f, double* __restrict sa) {
  if (c == 1) {
    const float a = alpha[0];
    double s = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += 1024) {
      const int64_t r1 = std::min(rows, r0 + 1024);
      float fs = 0.0f;
      for (int64_t i = r0; i < r1; i++) {
        const bool pos = x[i] > 0.0f;
        dx[i] = pos ? dy[i] : a * dy[i];
        fs += pos ? 0.0f : dy[i] * x[i];
      }
      s += fs;
    }
    sa[0] += s;
    return;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    std::fill(f, f + c, 0.0f);
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * c;
      const float* dr = dy + r * c;
      float* o = dx + r * c;
      for (int64_t j = 0; j < c; j++) {
        const bool pos = xr[j] > 0.0f;
        o[j] = pos ? dr[j] : alpha[j] * dr[j];
        f[j] += pos ? 0.0f : dr[j] * xr[j];
      }
    }
    for (int64_t j = 0; j < c; j++) sa[j] += f[j];
  }
}
NA_DISPATCH(preluGradRows, (const float* x, const float* dy, float* dx, int64_t rows, int64_t c, const float* alpha, float* f, double* sa),
            (x, dy, dx, rows, c, alpha, f, sa))

/** Rows [lo, hi) of thread i of nt. */
void rowRange(int64_t rows, int i, int nt, int64_t* lo, int64_t* hi) {
  *lo = rows * i / nt;
  *hi = rows * (i + 1) / nt;
}

/** 1/√(var + eps), the same in forward and backward. */
float rstdOf(float var, float eps) { return (float)(1.0 / std::sqrt((double)var + (double)eps)); }

}  // namespace

void bnForward(const float* x, int64_t rows, int64_t c, const float* gamma, const float* beta, const float* alpha,
               float eps, float* y, float* mean, float* var) {
  const int t = threadsFor(rows * c);
  std::vector<double> parts((size_t)t * 2 * c, 0.0);
  std::vector<float> scale(c), shift(c);
  const float* pivot = x;  // row 0: sums of x − pivot keep Σx² − (Σx)²/n from cancelling
  prefaultOutput(y, (size_t)(rows * c));
  const double n = (double)rows;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t lo, hi;
    rowRange(rows, i, nt, &lo, &hi);
    std::vector<float> fs(c), fq(c);
    double* s = parts.data() + (size_t)i * 2 * c;
    statsRows(x + lo * c, hi - lo, c, pivot, fs.data(), fq.data(), s, s + c);
#pragma omp barrier
#pragma omp single
    {
      for (int64_t j = 0; j < c; j++) {
        double sum = 0.0, sq = 0.0;
        for (int k = 0; k < t; k++) {
          sum += parts[(size_t)k * 2 * c + j];
          sq += parts[(size_t)k * 2 * c + c + j];
        }
        const double d = sum / n;
        const double m = (double)pivot[j] + d;
        const double v = std::max(0.0, sq / n - d * d);
        mean[j] = (float)m;
        var[j] = (float)v;
        const float rs = rstdOf(var[j], eps);
        scale[j] = gamma[j] * rs;
        shift[j] = beta[j] - mean[j] * scale[j];
      }
    }
    applyRows(x + lo * c, y + lo * c, hi - lo, c, scale.data(), shift.data(), alpha);
  }
}

void bnBackward(const float* x, const float* dy, int64_t rows, int64_t c, const float* gamma, const float* beta,
                const float* alpha, const float* mean, const float* var, float eps, const float* dmean,
                const float* dvar, float* dx, float* dgamma, float* dbeta, float* dalpha) {
  const int t = threadsFor(rows * c);
  std::vector<float> rstd(c), scale(c), shift(c), k1(c), k2(c), k3(c);
  for (int64_t j = 0; j < c; j++) {
    rstd[j] = rstdOf(var[j], eps);
    scale[j] = gamma[j] * rstd[j];
    shift[j] = beta[j] - mean[j] * scale[j];
  }
  std::vector<double> parts((size_t)t * 3 * c, 0.0);
  prefaultOutput(dx, (size_t)(rows * c));
  const double n = (double)rows;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t lo, hi;
    rowRange(rows, i, nt, &lo, &hi);
    std::vector<float> f(3 * c);
    double* s = parts.data() + (size_t)i * 3 * c;
    bnGradSums(x + lo * c, dy + lo * c, hi - lo, c, mean, rstd.data(), scale.data(), shift.data(), alpha, f.data(),
               f.data() + c, f.data() + 2 * c, s, s + c, s + 2 * c);
#pragma omp barrier
#pragma omp single
    {
      for (int64_t j = 0; j < c; j++) {
        double sg = 0.0, sgx = 0.0, sa = 0.0;
        for (int k = 0; k < t; k++) {
          sg += parts[(size_t)k * 3 * c + j];
          sgx += parts[(size_t)k * 3 * c + c + j];
          sa += parts[(size_t)k * 3 * c + 2 * c + j];
        }
        dbeta[j] = (float)sg;
        dgamma[j] = (float)sgx;
        if (alpha) dalpha[j] = (float)sa;
        const double a = (double)gamma[j] * (double)rstd[j];
        const double dm = dmean ? (double)dmean[j] : 0.0, dv = dvar ? (double)dvar[j] : 0.0;
        k1[j] = (float)a;
        k2[j] = (float)(-a * sgx / n + 2.0 * dv / ((double)rstd[j] * n));
        k3[j] = (float)(-a * sg / n + dm / n);
      }
    }
    bnGradDx(x + lo * c, dy + lo * c, dx + lo * c, hi - lo, c, mean, rstd.data(), scale.data(), shift.data(), alpha,
             k1.data(), k2.data(), k3.data());
  }
}

void preluForward(const float* x, int64_t rows, int64_t c, const float* alpha, float* y) {
  const int t = threadsFor(rows * c);
  prefaultOutput(y, (size_t)(rows * c));
#pragma omp parallel num_threads(t) if (t > 1)
  {
    int64_t lo, hi;
    rowRange(rows, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
    preluRows(x + lo * c, y + lo * c, hi - lo, c, alpha);
  }
}

void preluBackward(const float* x, const float* dy, int64_t rows, int64_t c, const float* alpha, float* dx,
                   float* dalpha) {
  const int t = threadsFor(rows * c);
  std::vector<double> parts((size_t)t * c, 0.0);
  prefaultOutput(dx, (size_t)(rows * c));
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int i = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t lo, hi;
    rowRange(rows, i, nt, &lo, &hi);
    std::vector<float> f(c);
    preluGradRows(x + lo * c, dy + lo * c, dx + lo * c, hi - lo, c, alpha, f.data(), parts.data() + (size_t)i * c);
  }
  for (int64_t j = 0; j < c; j++) {
    double s = 0.0;
    for (int k = 0; k < t; k++) s += parts[(size_t)k * c + j];
    dalpha[j] = (float)s;
  }
}

// ---- N-API bindings ----------------------------------------------------------------------

namespace {

bool fail(const Napi::CallbackInfo& info, const char* what) {
  Napi::TypeError::New(info.Env(), what).ThrowAsJavaScriptException();
  return false;
}

/** Float32Array argument i of at least n elements (nullptr for null/undefined when optional). */
bool floats(const Napi::CallbackInfo& info, size_t i, float** out, int64_t n, bool optional = false) {
  Napi::Value v = info[i];
  if (optional && (v.IsNull() || v.IsUndefined())) { *out = nullptr; return true; }
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    return fail(info, "shardface_native: expected a Float32Array argument");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if ((int64_t)a.ElementLength() < n) return fail(info, "shardface_native: Float32Array too short for the given shape");
  *out = a.Data();
  return true;
}

/** rows (arg i) and c (arg i+1), both ≥ 1. */
bool dims(const Napi::CallbackInfo& info, size_t i, int64_t* rows, int64_t* c) {
  if (!info[i].IsNumber() || !info[i + 1].IsNumber()) return fail(info, "shardface_native: expected rows and channels");
  *rows = info[i].As<Napi::Number>().Int64Value();
  *c = info[i + 1].As<Napi::Number>().Int64Value();
  if (*rows < 1 || *c < 1) return fail(info, "shardface_native: rows and channels must be >= 1");
  return true;
}

float number(const Napi::CallbackInfo& info, size_t i) { return (float)info[i].As<Napi::Number>().DoubleValue(); }

// bnForward(x, rows, c, gamma, beta, alpha|null, eps, y, mean, variance)
Napi::Value BnForward(const Napi::CallbackInfo& info) {
  int64_t rows, c;
  if (!dims(info, 1, &rows, &c)) return info.Env().Undefined();
  float *x, *gamma, *beta, *alpha, *y, *mean, *var;
  if (!floats(info, 0, &x, rows * c) || !floats(info, 3, &gamma, c) || !floats(info, 4, &beta, c) ||
      !floats(info, 5, &alpha, c, true) || !floats(info, 7, &y, rows * c) || !floats(info, 8, &mean, c) ||
      !floats(info, 9, &var, c))
    return info.Env().Undefined();
  bnForward(x, rows, c, gamma, beta, alpha, number(info, 6), y, mean, var);
  return info.Env().Undefined();
}

// bnBackward(x, dy, rows, c, gamma, beta, alpha|null, mean, variance, eps, dmean|null, dvariance|null,
//            dx, dgamma, dbeta, dalpha|null)
Napi::Value BnBackward(const Napi::CallbackInfo& info) {
  int64_t rows, c;
  if (!dims(info, 2, &rows, &c)) return info.Env().Undefined();
  float *x, *dy, *gamma, *beta, *alpha, *mean, *var, *dmean, *dvar, *dx, *dgamma, *dbeta, *dalpha;
  if (!floats(info, 0, &x, rows * c) || !floats(info, 1, &dy, rows * c) || !floats(info, 4, &gamma, c) ||
      !floats(info, 5, &beta, c) || !floats(info, 6, &alpha, c, true) || !floats(info, 7, &mean, c) ||
      !floats(info, 8, &var, c) || !floats(info, 10, &dmean, c, true) || !floats(info, 11, &dvar, c, true) ||
      !floats(info, 12, &dx, rows * c) || !floats(info, 13, &dgamma, c) || !floats(info, 14, &dbeta, c) ||
      !floats(info, 15, &dalpha, c, true))
    return info.Env().Undefined();
  if (alpha && !dalpha) { fail(info, "shardface_native: bnBackward with alpha needs dalpha"); return info.Env().Undefined(); }
  bnBackward(x, dy, rows, c, gamma, beta, alpha, mean, var, number(info, 9), dmean, dvar, dx, dgamma, dbeta, dalpha);
  return info.Env().Undefined();
}

// preluForward(x, rows, c, alpha, y)
Napi::Value PreluForward(const Napi::CallbackInfo& info) {
  int64_t rows, c;
  if (!dims(info, 1, &rows, &c)) return info.Env().Undefined();
  float *x, *alpha, *y;
  if (!floats(info, 0, &x, rows * c) || !floats(info, 3, &alpha, c) || !floats(info, 4, &y, rows * c))
    return info.Env().Undefined();
  preluForward(x, rows, c, alpha, y);
  return info.Env().Undefined();
}

// preluBackward(x, dy, rows, c, alpha, dx, dalpha)
Napi::Value PreluBackward(const Napi::CallbackInfo& info) {
  int64_t rows, c;
  if (!dims(info, 2, &rows, &c)) return info.Env().Undefined();
  float *x, *dy, *alpha, *dx, *dalpha;
  if (!floats(info, 0, &x, rows * c) || !floats(info, 1, &dy, rows * c) || !floats(info, 4, &alpha, c) ||
      !floats(info, 5, &dx, rows * c) || !floats(info, 6, &dalpha, c))
    return info.Env().Undefined();
  preluBackward(x, dy, rows, c, alpha, dx, dalpha);
  return info.Env().Undefined();
}

}  // namespace

void registerNormAct(Napi::Env env, Napi::Object exports) {
  exports.Set("bnForward", Napi::Function::New(env, BnForward));
  exports.Set("bnBackward", Napi::Function::New(env, BnBackward));
  exports.Set("preluForward", Napi::Function::New(env, PreluForward));
  exports.Set("preluBackward", Napi::Function::New(env, PreluBackward));
}

}  // namespace sf
