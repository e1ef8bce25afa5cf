// Thread count and scratch memory shared by all kernels.
#include <cblas.h>
#include <omp.h>

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

}  // namespace sf
