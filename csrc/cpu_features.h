// Run-time CPU feature detection and the choice of the per-ISA kernel table.
#pragma once

namespace embedcore {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Highest level this CPU supports *and* this build compiled a translation unit for.
Isa best_supported_isa();
// Whether the CPU supports `isa` and the build includes it.
bool isa_available(Isa isa);
const char* isa_name(Isa isa);
// Parses "scalar" | "avx2" | "avx512"; returns false on an unknown name.
bool parse_isa(const char* name, Isa* out);

}  // namespace embedcore
