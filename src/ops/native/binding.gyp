{
  "targets": [
    {
      "target_name": "shardface_native",
      "sources": ["addon.cc", "threads.cc", "gemm.cc", "conv.cc", "depthwise.cc", "elementwise.cc", "classifier.cc", "norm-act.cc", "shm.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-O2", "-O0"],
      "cflags_cc!": ["-O2", "-O0"],
      "cflags": ["-O3", "-fopenmp", "-fno-trapping-math", "-Wno-psabi"],
      "cflags_cc": ["-O3", "-fopenmp", "-fno-trapping-math", "-std=c++17", "-Wno-psabi"],
      "ldflags": ["-fopenmp", "-Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp"],
      "libraries": ["/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0"]
    }
  ]
}
