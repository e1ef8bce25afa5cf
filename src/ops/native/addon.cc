// N-API bindings: argument checking and unpacking only; the math is in the other files.
// Every tensor argument is a Float32Array; shapes travel as plain numbers, conv
// geometry as one array [n,h,w,c, kh,kw, oh,ow,cout, sh,sw, pt,pl, groups].
#include <cblas.h>
#include <napi.h>

#include "kernels.h"
#include "norm-act.h"
#include "shm.h"

namespace {

bool fail(const Napi::CallbackInfo& info, const char* what) {
  Napi::TypeError::New(info.Env(), what).ThrowAsJavaScriptException();
  return false;
}

/** Float32Array argument i (nullptr for null/undefined when optional). */
bool floats(const Napi::CallbackInfo& info, size_t i, float** out, size_t minLength, bool optional = false) {
  Napi::Value v = info[i];
  if (optional && (v.IsNull() || v.IsUndefined())) { *out = nullptr; return true; }
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    return fail(info, "shardface_native: expected a Float32Array argument");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() < minLength) return fail(info, "shardface_native: Float32Array too short for the given shape");
  *out = a.Data();
  return true;
}

/** Int32Array argument i of at least minLength elements. */
bool ints(const Napi::CallbackInfo& info, size_t i, int32_t** out, size_t minLength) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    return fail(info, "shardface_native: expected an Int32Array argument");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  if (a.ElementLength() < minLength) return fail(info, "shardface_native: Int32Array too short for the given shape");
  *out = a.Data();
  return true;
}

/** Every entry of a[0..n) in [lo, hi): a bad label or row index must not become a wild write. */
bool inRange(const Napi::CallbackInfo& info, const int32_t* a, int64_t n, int64_t lo, int64_t hi, const char* what) {
  for (int64_t i = 0; i < n; i++)
    if (a[i] < lo || a[i] >= hi) return fail(info, what);
  return true;
}

int64_t integer(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int64Value(); }

bool convShape(const Napi::CallbackInfo& info, size_t i, sf::ConvShape* s) {
  if (!info[i].IsArray()) return fail(info, "shardface_native: expected conv geometry array");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() != 14) return fail(info, "shardface_native: conv geometry needs 14 numbers");
  int64_t v[14];
  for (uint32_t k = 0; k < 14; k++) v[k] = a.Get(k).As<Napi::Number>().Int64Value();
  *s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]};
  if (s->groups < 1 || s->c % s->groups != 0 || s->cout % s->groups != 0 || s->sh < 1 || s->sw < 1)
    return fail(info, "shardface_native: bad conv geometry");
  return true;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  sf::setThreads((int)integer(info, 0));
  return Napi::Number::New(info.Env(), sf::threads());
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", sf::threads());
  o.Set("blasConfig", openblas_get_config());
  o.Set("blasCore", openblas_get_corename());
#if defined(__x86_64__) && defined(__GNUC__)
  o.Set("avx2", (bool)__builtin_cpu_supports("avx2") && (bool)__builtin_cpu_supports("fma"));
#else
  o.Set("avx2", false);
#endif
  return o;
}

Napi::Value ReuseFreedMemory(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), sf::reuseFreedMemory(info[0].ToBoolean().Value()));
}

// batchMatMul(a, b, out, batch, batchA, batchB, m, n, k, transA, transB)
Napi::Value BatchMatMul(const Napi::CallbackInfo& info) {
  const int64_t batch = integer(info, 3), batchA = integer(info, 4), batchB = integer(info, 5);
  const int64_t m = integer(info, 6), n = integer(info, 7), k = integer(info, 8);
  float *a, *b, *c;
  if (!floats(info, 0, &a, batchA * m * k) || !floats(info, 1, &b, batchB * k * n) || !floats(info, 2, &c, batch * m * n))
    return info.Env().Undefined();
  sf::batchMatMul(a, b, c, batch, batchA, batchB, m, n, k, info[9].ToBoolean(), info[10].ToBoolean());
  return info.Env().Undefined();
}

// epilogue(y, rows, cols, bias|null, biasMode, activation, alpha, prelu|null, preluMode)
Napi::Value Epilogue(const Napi::CallbackInfo& info) {
  const int64_t rows = integer(info, 1), cols = integer(info, 2);
  float *y, *bias, *prelu;
  if (!floats(info, 0, &y, rows * cols) || !floats(info, 3, &bias, 0, true) || !floats(info, 7, &prelu, 0, true))
    return info.Env().Undefined();
  const int biasMode = bias ? (int)integer(info, 4) : sf::kNone;
  const int preluMode = prelu ? (int)integer(info, 8) : sf::kNone;
  const int act = (int)integer(info, 5);
  if (act == sf::kPrelu && !prelu) { fail(info, "shardface_native: prelu activation needs weights"); return info.Env().Undefined(); }
  sf::epilogue(y, rows, cols, bias, biasMode, act, (float)info[6].As<Napi::Number>().DoubleValue(), prelu, preluMode);
  return info.Env().Undefined();
}

using ConvFn = void (*)(const float*, const float*, float*, const sf::ConvShape&);

/** conv-like(in0, in1, out, geometry): sizes checked against the geometry by role. */
template <ConvFn fn, int kRole>
Napi::Value Conv(const Napi::CallbackInfo& info) {
  sf::ConvShape s;
  if (!convShape(info, 3, &s)) return info.Env().Undefined();
  const int64_t xSize = s.n * s.h * s.w * s.c, ySize = s.n * s.oh * s.ow * s.cout;
  const int64_t wSize = kRole >= 3 ? s.kh * s.kw * s.cout : s.kh * s.kw * (s.c / s.groups) * s.cout;
  // role 0/3: (x, w) -> y; role 1/4: (dy, w) -> dx; role 2/5: (x, dy) -> dw   (3..5 depthwise)
  const int role = kRole % 3;
  const int64_t s0 = role == 1 ? ySize : xSize, s1 = role == 2 ? ySize : wSize;
  const int64_t s2 = role == 0 ? ySize : role == 1 ? xSize : wSize;
  float *a, *b, *c;
  if (!floats(info, 0, &a, s0) || !floats(info, 1, &b, s1) || !floats(info, 2, &c, s2)) return info.Env().Undefined();
  fn(a, b, c, s);
  return info.Env().Undefined();
}

// binary(op, a, b, out, P, Q, R, side)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  const int64_t p = integer(info, 4), q = integer(info, 5), r = integer(info, 6);
  const int side = (int)integer(info, 7);
  float *a, *b, *out;
  if (!floats(info, 1, &a, side == 2 ? p * r : p * q * r) || !floats(info, 2, &b, side == 1 ? p * r : p * q * r) ||
      !floats(info, 3, &out, p * q * r))
    return info.Env().Undefined();
  sf::binary((int)integer(info, 0), a, b, out, p, q, r, side);
  return info.Env().Undefined();
}

// relu(x, y)
Napi::Value Relu(const Napi::CallbackInfo& info) {
  float *x, *y;
  if (!floats(info, 0, &x, 0)) return info.Env().Undefined();
  const int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  if (!floats(info, 1, &y, n)) return info.Env().Undefined();
  sf::relu(x, y, n);
  return info.Env().Undefined();
}

// reduceSum(x, out, P, Q, R, scale)
Napi::Value ReduceSum(const Napi::CallbackInfo& info) {
  const int64_t p = integer(info, 2), q = integer(info, 3), r = integer(info, 4);
  float *x, *out;
  if (!floats(info, 0, &x, p * q * r) || !floats(info, 1, &out, p * r)) return info.Env().Undefined();
  sf::reduceSum(x, out, p, q, r, info[5].As<Napi::Number>().DoubleValue());
  return info.Env().Undefined();
}

double number(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().DoubleValue(); }

/** margin = [s, m1, m2, m3, variantCode] */
bool margin(const Napi::CallbackInfo& info, size_t i, sf::Margin* m) {
  if (!info[i].IsArray() || info[i].As<Napi::Array>().Length() != 5) return fail(info, "shardface_native: margin needs [s, m1, m2, m3, variant]");
  Napi::Array a = info[i].As<Napi::Array>();
  double v[5];
  for (uint32_t k = 0; k < 5; k++) v[k] = a.Get(k).As<Napi::Number>().DoubleValue();
  *m = {v[0], v[1], v[2], v[3], (int)v[4]};
  if (m->variant < sf::kStraightThrough || m->variant > sf::kLegacyEasy) return fail(info, "shardface_native: unknown margin variant");
  return true;
}

// rowNorms(x, rows, d, out)
Napi::Value RowNorms(const Napi::CallbackInfo& info) {
  const int64_t rows = integer(info, 1), d = integer(info, 2);
  float *x, *out;
  if (!floats(info, 0, &x, rows * d) || !floats(info, 3, &out, rows)) return info.Env().Undefined();
  sf::rowNorms(x, rows, d, out);
  return info.Env().Undefined();
}

// shardForward(emb, w, wNorm|null, labels, n, k, d, margin, chunk, rowMax, sumExp, target)
Napi::Value ShardForward(const Napi::CallbackInfo& info) {
  const int64_t n = integer(info, 4), k = integer(info, 5), d = integer(info, 6), chunk = integer(info, 8);
  float *emb, *w, *wNorm, *rowMax, *sumExp, *target;
  int32_t* labels;
  sf::Margin m;
  if (!floats(info, 0, &emb, n * d) || !floats(info, 1, &w, k * d) || !floats(info, 2, &wNorm, k, true) ||
      !ints(info, 3, &labels, n) || !margin(info, 7, &m) || !floats(info, 9, &rowMax, n) ||
      !floats(info, 10, &sumExp, n) || !floats(info, 11, &target, n) ||
      !inRange(info, labels, n, -1, k, "shardface_native: label outside [-1, K)"))
    return info.Env().Undefined();
  if (chunk < 1) { fail(info, "shardface_native: chunk must be >= 1"); return info.Env().Undefined(); }
  sf::shardForward(emb, w, wNorm, labels, n, k, d, m, chunk, rowMax, sumExp, target);
  return info.Env().Undefined();
}

// shardBackward(emb, w, wNorm|null, labels, logSumExp, n, k, d, margin, rowsTotal, chunk, gradEmb, gradW)
Napi::Value ShardBackward(const Napi::CallbackInfo& info) {
  const int64_t n = integer(info, 5), k = integer(info, 6), d = integer(info, 7), chunk = integer(info, 10);
  const double rowsTotal = number(info, 9);
  float *emb, *w, *wNorm, *lse, *gradEmb, *gradW;
  int32_t* labels;
  sf::Margin m;
  if (!floats(info, 0, &emb, n * d) || !floats(info, 1, &w, k * d) || !floats(info, 2, &wNorm, k, true) ||
      !ints(info, 3, &labels, n) || !floats(info, 4, &lse, n) || !margin(info, 8, &m) ||
      !floats(info, 11, &gradEmb, n * d) || !floats(info, 12, &gradW, k * d) ||
      !inRange(info, labels, n, -1, k, "shardface_native: label outside [-1, K)"))
    return info.Env().Undefined();
  if (chunk < 1 || !(rowsTotal > 0)) { fail(info, "shardface_native: chunk must be >= 1 and rowsTotal > 0"); return info.Env().Undefined(); }
  sf::shardBackward(emb, w, wNorm, labels, lse, n, k, d, m, rowsTotal, chunk, gradEmb, gradW);
  return info.Env().Undefined();
}

// rowSgdUpdate(w, v, g, index, count, rows, d, lr, mu, wd): rows index[0..rows) of the count×d buffers
Napi::Value RowSgdUpdate(const Napi::CallbackInfo& info) {
  const int64_t count = integer(info, 4), rows = integer(info, 5), d = integer(info, 6);
  float *w, *v, *g;
  int32_t* index;
  if (!floats(info, 0, &w, count * d) || !floats(info, 1, &v, count * d) || !floats(info, 2, &g, rows * d) ||
      !ints(info, 3, &index, rows) || !inRange(info, index, rows, 0, count, "shardface_native: row index outside [0, count)"))
    return info.Env().Undefined();
  sf::rowSgdUpdate(w, v, g, index, rows, d, (float)number(info, 7), (float)number(info, 8), (float)number(info, 9));
  return info.Env().Undefined();
}

// rowAdamWUpdate(w, m, v, g, index, count, rows, d, [decay, beta1, 1-beta1, beta2, 1-beta2, sqrtBc2, eps, stepSize])
Napi::Value RowAdamWUpdate(const Napi::CallbackInfo& info) {
  const int64_t count = integer(info, 5), rows = integer(info, 6), d = integer(info, 7);
  float *w, *m, *v, *g;
  int32_t* index;
  if (!floats(info, 0, &w, count * d) || !floats(info, 1, &m, count * d) || !floats(info, 2, &v, count * d) ||
      !floats(info, 3, &g, rows * d) || !ints(info, 4, &index, rows) ||
      !inRange(info, index, rows, 0, count, "shardface_native: row index outside [0, count)"))
    return info.Env().Undefined();
  if (!info[8].IsArray() || info[8].As<Napi::Array>().Length() != 8) { fail(info, "shardface_native: AdamW needs 8 constants"); return info.Env().Undefined(); }
  Napi::Array a = info[8].As<Napi::Array>();
  float c[8];
  for (uint32_t i = 0; i < 8; i++) c[i] = (float)a.Get(i).As<Napi::Number>().DoubleValue();
  const sf::AdamWConsts k{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
  sf::rowAdamWUpdate(w, m, v, g, index, rows, d, k);
  return info.Env().Undefined();
}

// gatherRows(x, count, d, index, rows, out)
Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  const int64_t count = integer(info, 1), d = integer(info, 2), rows = integer(info, 4);
  float *x, *out;
  int32_t* index;
  if (!floats(info, 0, &x, count * d) || !ints(info, 3, &index, rows) || !floats(info, 5, &out, rows * d) ||
      !inRange(info, index, rows, 0, count, "shardface_native: row index outside [0, count)"))
    return info.Env().Undefined();
  sf::gatherRows(x, index, rows, d, out);
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("reuseFreedMemory", Napi::Function::New(env, ReuseFreedMemory));
  exports.Set("batchMatMul", Napi::Function::New(env, BatchMatMul));
  exports.Set("epilogue", Napi::Function::New(env, Epilogue));
  exports.Set("conv2d", Napi::Function::New(env, Conv<sf::conv2d, 0>));
  exports.Set("conv2dBackpropInput", Napi::Function::New(env, Conv<sf::conv2dBackpropInput, 1>));
  exports.Set("conv2dBackpropFilter", Napi::Function::New(env, Conv<sf::conv2dBackpropFilter, 2>));
  exports.Set("depthwise", Napi::Function::New(env, Conv<sf::depthwise, 3>));
  exports.Set("depthwiseBackpropInput", Napi::Function::New(env, Conv<sf::depthwiseBackpropInput, 4>));
  exports.Set("depthwiseBackpropFilter", Napi::Function::New(env, Conv<sf::depthwiseBackpropFilter, 5>));
  exports.Set("groupedSmall", Napi::Function::New(env, Conv<sf::groupedSmall, 0>));
  exports.Set("groupedSmallBackpropInput", Napi::Function::New(env, Conv<sf::groupedSmallBackpropInput, 1>));
  exports.Set("groupedSmallBackpropFilter", Napi::Function::New(env, Conv<sf::groupedSmallBackpropFilter, 2>));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("relu", Napi::Function::New(env, Relu));
  exports.Set("reduceSum", Napi::Function::New(env, ReduceSum));
  exports.Set("rowNorms", Napi::Function::New(env, RowNorms));
  exports.Set("shardForward", Napi::Function::New(env, ShardForward));
  exports.Set("shardBackward", Napi::Function::New(env, ShardBackward));
  exports.Set("rowSgdUpdate", Napi::Function::New(env, RowSgdUpdate));
  exports.Set("rowAdamWUpdate", Napi::Function::New(env, RowAdamWUpdate));
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows));
  sf::registerNormAct(env, exports);  // bnForward, bnBackward, preluForward, preluBackward
  sf::registerShm(env, exports);      // shmCreate, shmOpen, shmUnlink, shmWait, shmStore, shmReduce
  return exports;
}

}  // namespace

NODE_API_MODULE(shardface_native, Init)
