// Portable kernels: compiled without ISA flags, so they run on any x86-64 (and other CPUs).
#include "kernels.h"

namespace embedcore {
namespace {

float dot_f32(const float* a, const float* b, size_t d) {
  // Four partial sums let the compiler pipeline without -ffast-math.
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  size_t i = 0;
  for (; i + 4 <= d; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < d; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

float l2sq_f32(const float* a, const float* b, size_t d) {
  float s0 = 0.f, s1 = 0.f;
  size_t i = 0;
  for (; i + 2 <= d; i += 2) {
    const float t0 = a[i] - b[i], t1 = a[i + 1] - b[i + 1];
    s0 += t0 * t0;
    s1 += t1 * t1;
  }
  for (; i < d; ++i) {
    const float t = a[i] - b[i];
    s0 += t * t;
  }
  return s0 + s1;
}

int32_t dot_i8(const int8_t* a, const int8_t* b, size_t d) {
  int32_t s = 0;
  for (size_t i = 0; i < d; ++i) s += int32_t(a[i]) * int32_t(b[i]);
  return s;
}

uint32_t hamming(const uint8_t* a, const uint8_t* b, size_t nbytes) {
  uint32_t s = 0;
  size_t i = 0;
  for (; i + 8 <= nbytes; i += 8) {
    uint64_t x, y;
    __builtin_memcpy(&x, a + i, 8);
    __builtin_memcpy(&y, b + i, 8);
    s += uint32_t(__builtin_popcountll(x ^ y));
  }
  for (; i < nbytes; ++i) s += uint32_t(__builtin_popcount(unsigned(a[i] ^ b[i])));
  return s;
}

}  // namespace

const KernelTable& scalar_kernels() {
  static const KernelTable table{Isa::kScalar, dot_f32, l2sq_f32, dot_i8, hamming};
  return table;
}

}  // namespace embedcore
