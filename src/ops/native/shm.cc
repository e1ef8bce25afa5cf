// Shared-memory primitives for the same-host collectives (docs/architecture.md,
// "Data plane"). The layout of a segment and the protocol on its counters are
// JavaScript's business (src/collectives/shm-segment.ts); this file only maps
// segments, waits on and bumps 32-bit counters across processes, and sums slots.
#include "shm.h"

#include <immintrin.h>

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <string>
#include <vector>

#include "simd.h"

namespace sf {
namespace {

/** Throws an Error whose `code` is the errno name, so JavaScript can tell "no space" from "exists". */
void throwErrno(Napi::Env env, const std::string& what, int err) {
  const char* code = err == EEXIST ? "EEXIST" : err == ENOENT ? "ENOENT" : err == ENOSPC ? "ENOSPC" : err == EACCES ? "EACCES" : err == ENOSYS ? "ENOSYS" : "EIO";
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err));
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
}

bool validName(const std::string& name) {
  // One path component under /dev/shm: a leading slash and no other.
  return name.size() >= 2 && name.size() < 240 && name[0] == '/' && name.find('/', 1) == std::string::npos;
}

Napi::Value mapped(Napi::Env env, int fd, size_t bytes, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) {
    throwErrno(env, "mmap " + name, err);
    return env.Undefined();
  }
  // The mapping lives as long as the ArrayBuffer: unmapped when it is collected (or at exit).
  return Napi::ArrayBuffer::New(env, p, bytes, [](Napi::Env, void* data, size_t* len) {
    munmap(data, *len);
    delete len;
  }, new size_t(bytes));
}

// shmCreate(name, bytes): a new segment, owner-only (0600), its pages reserved up front
// (posix_fallocate), so a full /dev/shm fails here with ENOSPC instead of SIGBUS later.
// O_EXCL: an existing segment of that name is never reused.
Napi::Value ShmCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const double want = info[1].As<Napi::Number>().DoubleValue();
  if (!validName(name) || !(want >= 1) || want > 1e15) {
    Napi::TypeError::New(env, "shmCreate: bad name or size").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t bytes = (size_t)want;
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    throwErrno(env, "shm_open " + name, errno);
    return env.Undefined();
  }
  fchmod(fd, 0600);
  const int rc = posix_fallocate(fd, 0, (off_t)bytes);
  if (rc != 0) {
    close(fd);
    shm_unlink(name.c_str());
    throwErrno(env, "reserving " + std::to_string(bytes) + " bytes for " + name, rc);
    return env.Undefined();
  }
  return mapped(env, fd, bytes, name);
}

// shmOpen(name): maps an existing segment; only one this user owns with no group/other access.
Napi::Value ShmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  if (!validName(name)) {
    Napi::TypeError::New(env, "shmOpen: bad name").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    throwErrno(env, "shm_open " + name, errno);
    return env.Undefined();
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) != 0 || st.st_size <= 0) {
    close(fd);
    throwErrno(env, "shm segment " + name + " is not this user's private segment", EACCES);
    return env.Undefined();
  }
  return mapped(env, fd, (size_t)st.st_size, name);
}

// shmUnlink(name) -> true if removed, false if it did not exist.
Napi::Value ShmUnlink(const Napi::CallbackInfo& info) {
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  if (!validName(name)) return Napi::Boolean::New(info.Env(), false);
  return Napi::Boolean::New(info.Env(), shm_unlink(name.c_str()) == 0);
}

int32_t* counter(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Napi::TypeError::New(info.Env(), "shm: expected an Int32Array").ThrowAsJavaScriptException();
    return nullptr;
  }
  Napi::Int32Array a = info[0].As<Napi::Int32Array>();
  const int64_t i = info[1].As<Napi::Number>().Int64Value();
  if (i < 0 || (size_t)i >= a.ElementLength()) {
    Napi::RangeError::New(info.Env(), "shm: counter index out of range").ThrowAsJavaScriptException();
    return nullptr;
  }
  return a.Data() + i;
}

double nowMs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// shmWait(i32, index, target, timeoutMs) -> the counter's value: returns as soon as it is
// >= target (signed), or after timeoutMs with whatever it is. Spins briefly (a peer
// that is about to arrive is cheaper to spin for than a futex round trip), then sleeps
// on the process-shared futex of that word.
Napi::Value ShmWait(const Napi::CallbackInfo& info) {
  int32_t* word = counter(info);
  if (!word) return info.Env().Undefined();
  const int32_t target = info[2].As<Napi::Number>().Int32Value();
  const double timeoutMs = info[3].As<Napi::Number>().DoubleValue();
  int32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  for (int spin = 0; v < target && spin < 4000; spin++) {
    __builtin_ia32_pause();
    v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  }
  const double deadline = nowMs() + timeoutMs;
  while (v < target) {
    const double left = deadline - nowMs();
    if (left <= 0) break;
    timespec ts;
    ts.tv_sec = (time_t)(left / 1e3);
    ts.tv_nsec = (long)((left - ts.tv_sec * 1e3) * 1e6);
    syscall(SYS_futex, word, FUTEX_WAIT, v, &ts, nullptr, 0);
    v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
  }
  return Napi::Number::New(info.Env(), v);
}

// shmStore(i32, index, value): publishes value (release: everything written before is
// visible to whoever sees it) and wakes every waiter on that word.
Napi::Value ShmStore(const Napi::CallbackInfo& info) {
  int32_t* word = counter(info);
  if (!word) return info.Env().Undefined();
  __atomic_store_n(word, info[2].As<Napi::Number>().Int32Value(), __ATOMIC_RELEASE);
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  return info.Env().Undefined();
}

// ------------------------------------------------------------------ data movement
//
// The collectives are bound by memory bandwidth, not arithmetic: an all-reduce of a
// large array touches every byte a few times and never again soon. So the large
// copies and the results of a sum may be written with non-temporal (streaming)
// stores, which skip reading each destination line into the cache before it is
// overwritten (a third of the traffic of a plain copy). They are weakly ordered:
// every function that streams ends with an sfence, so the release store that
// publishes the stage (ShmStore) is seen after them. 16-byte streaming stores are
// used because they need only 16-byte alignment, which the destinations of a slice
// may have where 32 or 64 would not; the write-combining buffers merge them into
// full lines, so they stream as fast as wider ones (measured on the 2-core VM).

/** Streams `bytes` (a multiple of 4) from src to dst, no fence; plain copies for the unaligned head and the tail. */
void streamBytes(uint8_t* d, const uint8_t* s, size_t bytes) {
  // Head: up to dst's next 16-byte boundary (dst is 4-byte aligned, so 0..12 bytes).
  const size_t head = std::min(bytes, (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15);
  std::memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    const __m128 a = _mm_loadu_ps(reinterpret_cast<const float*>(s + i));
    const __m128 b = _mm_loadu_ps(reinterpret_cast<const float*>(s + i + 16));
    const __m128 c = _mm_loadu_ps(reinterpret_cast<const float*>(s + i + 32));
    const __m128 e = _mm_loadu_ps(reinterpret_cast<const float*>(s + i + 48));
    _mm_stream_ps(reinterpret_cast<float*>(d + i), a);
    _mm_stream_ps(reinterpret_cast<float*>(d + i + 16), b);
    _mm_stream_ps(reinterpret_cast<float*>(d + i + 32), c);
    _mm_stream_ps(reinterpret_cast<float*>(d + i + 48), e);
  }
  std::memcpy(d + i, s + i, bytes - i);
}

/** Copies `bytes` (a multiple of 4) from src to dst; streaming when `nt` and the ranges do not overlap. */
void copyBytes(void* dst, const void* src, size_t bytes, bool nt) {
  const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  if (!nt || (d < s + bytes && s < d + bytes)) {
    std::memmove(dst, src, bytes);
    return;
  }
  streamBytes(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), bytes);
  _mm_sfence();
}

// One block of a reduction: acc[i] = in[0][i] ∘ in[1][i] ∘ … left to right, rounding to T
// after every step, so the result is the same bit pattern whoever computes it and
// whatever vector width the loops get (IEEE adds and divides are exact per lane; the
// build has no -ffast-math, so nothing is reassociated or contracted).
template <typename T>
SF_INLINE void sumBlockBody(T* acc, const T* const* in, size_t count, size_t at, size_t k, float divisor) {
  const T* a0 = in[0] + at;
  if constexpr (std::is_same_v<T, int32_t>) {
    auto* u = reinterpret_cast<uint32_t*>(acc);
    for (size_t i = 0; i < k; i++) u[i] = (uint32_t)a0[i];
    for (size_t j = 1; j < count; j++) {
      const T* aj = in[j] + at;
      for (size_t i = 0; i < k; i++) u[i] += (uint32_t)aj[i];  // wraps, like the ring
    }
  } else {
    if (count == 2) {
      // The common case (two ranks on a host, or the last two of more): one pass, no reload of acc.
      const T* a1 = in[1] + at;
      for (size_t i = 0; i < k; i++) acc[i] = a0[i] + a1[i];
    } else {
      for (size_t i = 0; i < k; i++) acc[i] = a0[i];
      for (size_t j = 1; j < count; j++) {
        const T* aj = in[j] + at;
        for (size_t i = 0; i < k; i++) acc[i] += aj[i];
      }
    }
    if (divisor != 1)
      for (size_t i = 0; i < k; i++) acc[i] = acc[i] / divisor;
  }
}
template <typename T>
SF_INLINE void maxBlockBody(T* acc, const T* const* in, size_t count, size_t at, size_t k) {
  // Max that lets a NaN win from either side, as the ring's max does.
  for (size_t i = 0; i < k; i++) {
    T m = in[0][at + i];
    for (size_t j = 1; j < count; j++) {
      const T q = in[j][at + i];
      if (q > m || q != q) m = q;
    }
    acc[i] = m;
  }
}
SF_INLINE void sumBlockF32Body(float* acc, const float* const* in, size_t count, size_t at, size_t k, float divisor) { sumBlockBody(acc, in, count, at, k, divisor); }
SF_INLINE void sumBlockI32Body(int32_t* acc, const int32_t* const* in, size_t count, size_t at, size_t k, float divisor) { sumBlockBody(acc, in, count, at, k, divisor); }
SF_DISPATCH(sumBlockF32, (float* acc, const float* const* in, size_t count, size_t at, size_t k, float divisor), (acc, in, count, at, k, divisor))
SF_DISPATCH(sumBlockI32, (int32_t* acc, const int32_t* const* in, size_t count, size_t at, size_t k, float divisor), (acc, in, count, at, k, divisor))

/**
 * out = in[0] ∘ in[1] ∘ … (and the same into `also` when given), block by block: a
 * block of every input is read into a cache-resident accumulator before a byte of the
 * block is written, so `out` or `also` may be one of the inputs. `out` is streamed when `nt`.
 */
template <typename T>
void reduceInto(T* out, T* also, const std::vector<const T*>& in, size_t n, int op, double divisor, bool nt) {
  constexpr size_t B = 2048;
  alignas(64) T acc[B];
  for (size_t at = 0; at < n; at += B) {
    const size_t k = n - at < B ? n - at : B;
    if (op == 1) maxBlockBody(acc, in.data(), in.size(), at, k);
    else if constexpr (std::is_same_v<T, float>) sumBlockF32(acc, in.data(), in.size(), at, k, (float)divisor);
    else sumBlockI32(acc, in.data(), in.size(), at, k, 1);
    if (nt) streamBytes(reinterpret_cast<uint8_t*>(out + at), reinterpret_cast<const uint8_t*>(acc), k * sizeof(T));
    else std::memcpy(out + at, acc, k * sizeof(T));
    if (also) std::memcpy(also + at, acc, k * sizeof(T));
  }
  if (nt) _mm_sfence();
}

template <typename T>
T* dataOf(Napi::TypedArray t) {
  return reinterpret_cast<T*>(static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset());
}

template <typename T>
bool views(const Napi::CallbackInfo& info, napi_typedarray_type type, T** out, T** also, std::vector<const T*>* in, size_t* n) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != type || !info[1].IsArray()) return false;
  Napi::TypedArray o = info[0].As<Napi::TypedArray>();
  *n = o.ElementLength();
  *out = dataOf<T>(o);
  *also = nullptr;
  if (info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined()) {
    if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != type || info[4].As<Napi::TypedArray>().ElementLength() != *n) return false;
    *also = dataOf<T>(info[4].As<Napi::TypedArray>());
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  if (arr.Length() < 1) return false;
  for (uint32_t j = 0; j < arr.Length(); j++) {
    Napi::Value v = arr.Get(j);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type || v.As<Napi::TypedArray>().ElementLength() != *n) return false;
    in->push_back(dataOf<T>(v.As<Napi::TypedArray>()));
  }
  return true;
}

// shmReduce(out, [in0, in1, ...], op, divisor, also?, stream?): out = in0 ∘ in1 ∘ … left to
// right (op 0 sum, then / divisor once for a float mean; op 1 max), and the same bytes into
// `also` when given. Float32Array or Int32Array, all of out's length; out and also may be
// inputs (a block of every input is read before that block is written). `stream`: write
// out with non-temporal stores (for a destination nobody reads again soon from this core).
Napi::Value ShmReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = info[2].As<Napi::Number>().Int32Value();
  const double divisor = info[3].As<Napi::Number>().DoubleValue();
  const bool nt = info.Length() > 5 && info[5].ToBoolean().Value();
  const bool isFloat = info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
  size_t n = 0;
  if (isFloat) {
    float *out, *also;
    std::vector<const float*> in;
    if (!views(info, napi_float32_array, &out, &also, &in, &n)) goto bad;
    reduceInto(out, also, in, n, op, divisor, nt);
  } else {
    int32_t *out, *also;
    std::vector<const int32_t*> in;
    if (!views(info, napi_int32_array, &out, &also, &in, &n)) goto bad;
    reduceInto(out, also, in, n, op, 1, nt);
  }
  return env.Undefined();
bad:
  Napi::TypeError::New(env, "shmReduce: expected (out, inputs[] of out's type and length, op, divisor, also?, stream?)").ThrowAsJavaScriptException();
  return env.Undefined();
}

// shmCopy(dst, src, stream): dst.set(src) for Float32Array / Int32Array views of equal byte
// length (overlapping ones as memmove); `stream`: with non-temporal stores (large copies nobody
// on this core reads soon).
Napi::Value ShmCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ok = [](const Napi::Value& v) {
    if (!v.IsTypedArray()) return false;
    const napi_typedarray_type t = v.As<Napi::TypedArray>().TypedArrayType();
    return t == napi_float32_array || t == napi_int32_array;
  };
  if (info.Length() < 2 || !ok(info[0]) || !ok(info[1]) || info[0].As<Napi::TypedArray>().ByteLength() != info[1].As<Napi::TypedArray>().ByteLength()) {
    Napi::TypeError::New(env, "shmCopy: expected (dst, src, stream) of equal byte length").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray d = info[0].As<Napi::TypedArray>();
  Napi::TypedArray s = info[1].As<Napi::TypedArray>();
  copyBytes(dataOf<uint8_t>(d), dataOf<uint8_t>(s), d.ByteLength(), info.Length() > 2 && info[2].ToBoolean().Value());
  return env.Undefined();
}

}  // namespace

void registerShm(Napi::Env env, Napi::Object exports) {
  exports.Set("shmCreate", Napi::Function::New(env, ShmCreate));
  exports.Set("shmOpen", Napi::Function::New(env, ShmOpen));
  exports.Set("shmUnlink", Napi::Function::New(env, ShmUnlink));
  exports.Set("shmWait", Napi::Function::New(env, ShmWait));
  exports.Set("shmStore", Napi::Function::New(env, ShmStore));
  exports.Set("shmReduce", Napi::Function::New(env, ShmReduce));
  exports.Set("shmCopy", Napi::Function::New(env, ShmCopy));
}

}  // namespace sf
