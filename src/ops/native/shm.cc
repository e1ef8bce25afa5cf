// Shared-memory primitives for the same-host collectives (docs/architecture.md,
// "Data plane"). The layout of a segment and the protocol on its counters are
// JavaScript's business (src/collectives/shm-segment.ts); this file only maps
// segments, waits on and bumps 32-bit counters across processes, and sums slots.
#include "shm.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

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

// Sums in the order the inputs are given, rounding to T after every add, so the
// result is the same bit pattern whoever computes it. Blocks keep the partial sums in cache.
template <typename T>
void reduceSum(T* out, const std::vector<const T*>& in, size_t n, double divisor) {
  constexpr size_t B = 2048;
  T acc[B];
  for (size_t at = 0; at < n; at += B) {
    const size_t k = n - at < B ? n - at : B;
    const T* a0 = in[0] + at;
    for (size_t i = 0; i < k; i++) acc[i] = a0[i];
    for (size_t j = 1; j < in.size(); j++) {
      const T* aj = in[j] + at;
      if constexpr (std::is_same_v<T, int32_t>) {
        for (size_t i = 0; i < k; i++) acc[i] = (int32_t)((uint32_t)acc[i] + (uint32_t)aj[i]);  // wraps, like the ring
      } else {
        for (size_t i = 0; i < k; i++) acc[i] += aj[i];
      }
    }
    if constexpr (std::is_same_v<T, float>) {
      if (divisor != 1) {
        const float d = (float)divisor;
        for (size_t i = 0; i < k; i++) acc[i] = acc[i] / d;
      }
    }
    std::memcpy(out + at, acc, k * sizeof(T));
  }
}

/** Max that lets a NaN win from either side, as the ring's max does. */
template <typename T>
void reduceMax(T* out, const std::vector<const T*>& in, size_t n) {
  for (size_t i = 0; i < n; i++) {
    T m = in[0][i];
    for (size_t j = 1; j < in.size(); j++) {
      const T q = in[j][i];
      if (q > m || q != q) m = q;
    }
    out[i] = m;
  }
}

template <typename T>
bool views(const Napi::CallbackInfo& info, napi_typedarray_type type, T** out, std::vector<const T*>* in, size_t* n) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != type || !info[1].IsArray()) return false;
  Napi::TypedArray o = info[0].As<Napi::TypedArray>();
  *n = o.ElementLength();
  *out = reinterpret_cast<T*>(static_cast<uint8_t*>(o.ArrayBuffer().Data()) + o.ByteOffset());
  Napi::Array arr = info[1].As<Napi::Array>();
  if (arr.Length() < 1) return false;
  for (uint32_t j = 0; j < arr.Length(); j++) {
    Napi::Value v = arr.Get(j);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type || v.As<Napi::TypedArray>().ElementLength() != *n) return false;
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    in->push_back(reinterpret_cast<const T*>(static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset()));
  }
  (void)env;
  return true;
}

// shmReduce(out, [in0, in1, ...], op, divisor): out = in0 ∘ in1 ∘ … left to right (op 0
// sum, then / divisor once for a float mean; op 1 max). Float32Array or Int32Array, all of
// out's length; out may be one of the inputs (element i is read before it is written).
Napi::Value ShmReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = info[2].As<Napi::Number>().Int32Value();
  const double divisor = info[3].As<Napi::Number>().DoubleValue();
  const bool isFloat = info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
  size_t n = 0;
  if (isFloat) {
    float* out;
    std::vector<const float*> in;
    if (!views(info, napi_float32_array, &out, &in, &n)) goto bad;
    if (op == 1) reduceMax(out, in, n);
    else reduceSum(out, in, n, divisor);
  } else {
    int32_t* out;
    std::vector<const int32_t*> in;
    if (!views(info, napi_int32_array, &out, &in, &n)) goto bad;
    if (op == 1) reduceMax(out, in, n);
    else reduceSum(out, in, n, 1);
  }
  return env.Undefined();
bad:
  Napi::TypeError::New(env, "shmReduce: expected (out, inputs[] of out's type and length, op, divisor)").ThrowAsJavaScriptException();
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
}

}  // namespace sf
