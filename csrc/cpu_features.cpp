#include "cpu_features.h"

#include <cstring>

namespace embedcore {

namespace {

// Whether the CPU (and the OS, for the vector state) supports `feature`; false off x86.
#if defined(__x86_64__) || defined(__i386__)
#define EC_CPU_HAS(feature) (__builtin_cpu_init(), __builtin_cpu_supports(feature))
#else
#define EC_CPU_HAS(feature) false
#endif

// f16c: the AVX2 kernels convert float16 corpora with it (every AVX2 CPU has it, but check).
bool cpu_has_avx2() { return EC_CPU_HAS("avx2") && EC_CPU_HAS("fma") && EC_CPU_HAS("popcnt") && EC_CPU_HAS("f16c"); }
bool cpu_has_avx512() {
  return cpu_has_avx2() && EC_CPU_HAS("avx512f") && EC_CPU_HAS("avx512bw") && EC_CPU_HAS("avx512vl");
}

#ifdef EMBEDCORE_HAVE_AVX2
constexpr bool kBuiltAvx2 = true;
#else
constexpr bool kBuiltAvx2 = false;
#endif
// The AVX-512 levels are built from both units (avx512 takes the AVX2 unit's popcount kernels).
#if defined(EMBEDCORE_HAVE_AVX512) && defined(EMBEDCORE_HAVE_AVX2)
constexpr bool kBuiltAvx512 = true;
#else
constexpr bool kBuiltAvx512 = false;
#endif

}  // namespace

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return kBuiltAvx2 && cpu_has_avx2();
    case Isa::kAvx512:
      return kBuiltAvx512 && cpu_has_avx512();
    case Isa::kAvx512Vpopcnt:
      return kBuiltAvx512 && cpu_has_avx512() && EC_CPU_HAS("avx512vpopcntdq");
  }
  return false;
}

Isa best_supported_isa() {
  Isa best = Isa::kScalar;
  for (Isa isa : kAllIsas)
    if (isa_available(isa)) best = isa;  // levels are listed in increasing order
  return best;
}

bool cpu_has_avx512_vnni() { return cpu_has_avx512() && EC_CPU_HAS("avx512vnni"); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Vpopcnt:
      return "avx512_vpopcnt";
  }
  return "unknown";
}

bool parse_isa(const char* name, Isa* out) {
  for (Isa isa : kAllIsas) {
    if (std::strcmp(name, isa_name(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace embedcore
