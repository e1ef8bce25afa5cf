// Hot loops compiled twice, for AVX2+FMA and for the baseline x86-64 (SSE2), and
// picked at run time from the CPU's feature flags: GCC's target_clones("arch=...")
// dispatches on the CPU model, which virtual machines often hide.
#pragma once

#define SF_INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__)
#define SF_AVX2 __attribute__((target("avx2,fma")))
namespace sf {
inline bool hasAvx2Fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
}  // namespace sf
/** Defines `name(params)` that runs the always-inline `name##Body(args)` built for the best ISA. */
#define SF_DISPATCH(name, params, args)                       \
  SF_AVX2 static void name##Avx2 params { name##Body args; }  \
  static void name##Base params { name##Body args; }          \
  static void name params {                                   \
    if (::sf::hasAvx2Fma()) name##Avx2 args;                  \
    else name##Base args;                                     \
  }
/** SF_DISPATCH for a body that returns a value of type `ret`. */
#define SF_DISPATCH_R(ret, name, params, args)                        \
  SF_AVX2 static ret name##Avx2 params { return name##Body args; }    \
  static ret name##Base params { return name##Body args; }            \
  static ret name params {                                            \
    return ::sf::hasAvx2Fma() ? name##Avx2 args : name##Base args;    \
  }
#else
#define SF_DISPATCH(name, params, args) \
  static void name params { name##Body args; }
#define SF_DISPATCH_R(ret, name, params, args) \
  static ret name params { return name##Body args; }
#endif
