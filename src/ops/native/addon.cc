// N-API bindings: argument checking and unpacking only; the math is in the other files.
// Every tensor argument is a Float32Array; shapes travel as plain numbers, conv
// geometry as one array [n,h,w,c, kh,kw, oh,ow,cout, sh,sw, pt,pl, groups].
#include <cblas.h>
#include <napi.h>

#include "kernels.h"

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("batchMatMul", Napi::Function::New(env, BatchMatMul));
  exports.Set("epilogue", Napi::Function::New(env, Epilogue));
  exports.Set("conv2d", Napi::Function::New(env, Conv<sf::conv2d, 0>));
  exports.Set("conv2dBackpropInput", Napi::Function::New(env, Conv<sf::conv2dBackpropInput, 1>));
  exports.Set("conv2dBackpropFilter", Napi::Function::New(env, Conv<sf::conv2dBackpropFilter, 2>));
  exports.Set("depthwise", Napi::Function::New(env, Conv<sf::depthwise, 3>));
  exports.Set("depthwiseBackpropInput", Napi::Function::New(env, Conv<sf::depthwiseBackpropInput, 4>));
  exports.Set("depthwiseBackpropFilter", Napi::Function::New(env, Conv<sf::depthwiseBackpropFilter, 5>));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("relu", Napi::Function::New(env, Relu));
  exports.Set("reduceSum", Napi::Function::New(env, ReduceSum));
  return exports;
}

}  // namespace

NODE_API_MODULE(shardface_native, Init)
