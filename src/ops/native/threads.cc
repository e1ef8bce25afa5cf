// Thread count and scratch memory shared by all kernels.
#include <cblas.h>
#include <omp.h>

#include <sys/mman.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels.h"

namespace sf {

static int gThreads = 1;

void setThreads(int n) {
  if (n < 1) n = 1;
  gThreads = n;
  openblas_set_num_threads(n);
  omp_set_num_threads(n);
}

int threads() { return gThreads; }

float* scratch(int slot, size_t floats) {
  // Per calling thread: the JS thread that runs the kernel (Node worker threads each
  // get their own); the OpenMP threads inside a kernel never call this.
  thread_local std::vector<std::unique_ptr<float[]>> buffers(4);
  thread_local std::vector<size_t> sizes(4, 0);
  if (sizes[slot] < floats) {
    buffers[slot].reset(new float[floats]);
    sizes[slot] = floats;
  }
  return buffers[slot].get();
}

bool reuseFreedMemory(bool on) {
#if defined(__GLIBC__)
  // Off: glibc's defaults (mmap above a dynamic threshold, trim the heap's top above 128 KiB).
  const bool ok = mallopt(M_MMAP_MAX, on ? 0 : 65536) == 1;
  return mallopt(M_TRIM_THRESHOLD, on ? INT_MAX : 128 * 1024) == 1 && ok;
#else
  (void)on;
  return false;
#endif
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

void prefaultOutput(float* p, size_t floats) {
#if defined(__linux__)
  const size_t bytes = floats * sizeof(float);
  if (bytes < ((size_t)256 << 10)) return;
  const uintptr_t page = 4096, huge = (uintptr_t)2 << 20;
  const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + bytes) & ~(page - 1);
  if (hi <= lo) return;
  const uintptr_t hlo = (lo + huge - 1) & ~(huge - 1), hhi = hi & ~(huge - 1);
  if (hhi > hlo) madvise((void*)hlo, hhi - hlo, MADV_HUGEPAGE);  // hints only: errors are harmless
  // The kernel zeroes every page it populates: over a few MB that is worth splitting
  // across the threads (pieces on huge-page bounds, so no huge page is split).
  const int64_t pieces = std::min<int64_t>(gThreads, (int64_t)((hi - lo) / ((size_t)1 << 20)));
  if (pieces < 2) {
    madvise((void*)lo, hi - lo, MADV_POPULATE_WRITE);
    return;
  }
  const uintptr_t step = (((hi - lo) / pieces) + huge - 1) & ~(huge - 1);
#pragma omp parallel for schedule(static) num_threads((int)pieces)
  for (int64_t i = 0; i < pieces; i++) {
    const uintptr_t a = i == 0 ? lo : std::min(hi, hlo + (uintptr_t)i * step);
    const uintptr_t b = i == pieces - 1 ? hi : std::min(hi, hlo + (uintptr_t)(i + 1) * step);
    if (b > a) madvise((void*)a, b - a, MADV_POPULATE_WRITE);
  }
#else
  (void)p;
  (void)floats;
#endif
}

}  // namespace sf
