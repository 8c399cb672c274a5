#include <atomic>
#include <cstdlib>

#include "kernels.h"

namespace embedcore {

namespace {

#if defined(EMBEDCORE_HAVE_AVX512) && defined(EMBEDCORE_HAVE_AVX2)
// AVX-512 F/BW/VL without VPOPCNTDQ (Skylake-SP, Cascade Lake): AVX-512 float and int8 kernels,
// AVX2's popcount kernels.
const KernelTable& avx512_kernels() {
  static const KernelTable table = [] {
    KernelTable t = avx512_vpopcnt_kernels();
    const KernelTable& popcounts = avx2_kernels();
    t.isa = Isa::kAvx512;
    t.hamming = popcounts.hamming;
    t.tile_hamming = popcounts.tile_hamming;
    t.hamming_nibble_rows = popcounts.hamming_nibble_rows;
    t.tile_hamming_nibbles = popcounts.tile_hamming_nibbles;
    return t;
  }();
  return table;
}
#endif

const KernelTable& table_for(Isa isa) {
  switch (isa) {
#if defined(EMBEDCORE_HAVE_AVX512) && defined(EMBEDCORE_HAVE_AVX2)
    case Isa::kAvx512Vpopcnt:
      return avx512_vpopcnt_kernels();
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
