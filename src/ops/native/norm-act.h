// Fused BatchNorm (training mode, batch statistics) with optional PReLU, and PReLU,
// forward and backward, over x viewed as [rows, c] (NHWC or [B, C]: channels last).
// The math is in norm-act.cc; so are its N-API bindings (registerNormAct, called
// from addon.cc's Init).
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace sf {

// From threads.cc (also declared in kernels.h).
int threads();
void prefaultOutput(float* p, size_t floats);

/**
 * mean[j], var[j]: batch mean and biased variance of column j (accumulated in double);
 * y = (x − mean)·γ/√(var + eps) + β, then y = y < 0 ? α·y : y when alpha is non-null.
 */
void bnForward(const float* x, int64_t rows, int64_t c, const float* gamma, const float* beta, const float* alpha,
               float eps, float* y, float* mean, float* var);
/**
 * Closed-form backward of bnForward given dy (and dmean/dvar, the gradients reaching the
 * mean and variance outputs; null = zero): with g = dy·PReLU'(z), x̂ = (x − mean)·rstd,
 * dβ = Σg, dγ = Σg·x̂, dα = Σ dy·z·[z ≤ 0],
 * dx = γ·rstd·(g − mean(g) − x̂·mean(g·x̂)) + dmean/n + 2·dvar·(x − mean)/n.
 * dalpha is written only when alpha is non-null.
 */
void bnBackward(const float* x, const float* dy, int64_t rows, int64_t c, const float* gamma, const float* beta,
                const float* alpha, const float* mean, const float* var, float eps, const float* dmean,
                const float* dvar, float* dx, float* dgamma, float* dbeta, float* dalpha);
/** y = x < 0 ? α[j]·x : x. */
void preluForward(const float* x, int64_t rows, int64_t c, const float* alpha, float* y);
/** dx = x > 0 ? dy : α[j]·dy; dα[j] = Σ_rows dy·x·[x ≤ 0]. */
void preluBackward(const float* x, const float* dy, int64_t rows, int64_t c, const float* alpha, float* dx,
                   float* dalpha);

/** Adds bnForward, bnBackward, preluForward, preluBackward to the addon's exports. */
void registerNormAct(Napi::Env env, Napi::Object exports);

}  // namespace sf
