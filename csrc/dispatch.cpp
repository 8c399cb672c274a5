#include <atomic>
#include <cstdlib>

#include "kernels.h"

namespace embedcore {

namespace {

const KernelTable& table_for(Isa isa) {
  switch (isa) {
#ifdef EMBEDCORE_HAVE_AVX512
    case Isa::kAvx512:
      return avx512_kernels();
#endif
#ifdef EMBEDCORE_HAVE_AVX2
    case Isa::kAvx2:
      return avx2_kernels();
#endif
    default:
      return scalar_kernels();
  }
}

Isa initial_isa() {
  // EMBEDCORE_CPU_ISA caps the level (e.g. "avx2" on an AVX-512 machine); an unknown or
  // unsupported value falls back to the best supported level.
  Isa isa = best_supported_isa();
  if (const char* env = std::getenv("EMBEDCORE_CPU_ISA")) {
    Isa wanted;
    if (parse_isa(env, &wanted) && isa_available(wanted)) isa = wanted;
  }
  return isa;
}

std::atomic<const KernelTable*>& active_slot() {
  static std::atomic<const KernelTable*> slot{&table_for(initial_isa())};
  return slot;
}

}  // namespace

const KernelTable& active_kernels() { return *active_slot().load(std::memory_order_acquire); }

bool set_active_isa(Isa isa) {
  if (!isa_available(isa)) return false;
  active_slot().store(&table_for(isa), std::memory_order_release);
  return true;
}

}  // namespace embedcore
