// Run-time CPU feature detection and the choice of the per-ISA kernel table.
#pragma once

namespace embedcore {

// Kernel levels, each named for what it requires of the CPU:
//   avx2            AVX2, FMA, POPCNT, F16C
//   avx512          + AVX-512 F, BW, VL: float and int8 kernels (popcounts stay AVX2's), as on
//                   Skylake-SP / Cascade Lake; VNNI int8 kernels where the CPU has VNNI
//   avx512_vpopcnt  + AVX-512 VPOPCNTDQ: the Hamming kernels too (Ice Lake, Zen 4 and later)
enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vpopcnt = 3 };
constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vpopcnt};

// Highest level this CPU supports *and* this build compiled a translation unit for.
Isa best_supported_isa();
// Whether the CPU supports `isa` and the build includes it.
bool isa_available(Isa isa);
const char* isa_name(Isa isa);
// Parses a level's name (isa_name); returns false on an unknown name.
bool parse_isa(const char* name, Isa* out);
// Whether the AVX-512 levels' int8 kernels use VNNI on this CPU (chosen at run time).
bool cpu_has_avx512_vnni();

}  // namespace embedcore
