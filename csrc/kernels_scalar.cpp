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

void tile_dot_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                  int64_t /*ahead*/) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j) out[i * nr + j] = dot_f32(q + i * d, c + j * d, size_t(d));
}

void tile_l2_f32(const float* q, int64_t nq, const float* c, int64_t nr, int64_t d, float* out,
                 int64_t /*ahead*/) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j) out[i * nr + j] = l2sq_f32(q + i * d, c + j * d, size_t(d));
}

void tile_dot_f32_i8(const float* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, float* out,
                     int64_t /*ahead*/) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j) {
      float s = 0.f;
      for (int64_t t = 0; t < d; ++t) s += q[i * d + t] * float(c[j * d + t]);
      out[i * nr + j] = s;
    }
}

void tile_dot_i8(const int8_t* q, int64_t nq, const int8_t* c, int64_t nr, int64_t d, int32_t* out) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j) out[i * nr + j] = dot_i8(q + i * d, c + j * d, size_t(d));
}

void tile_hamming(const uint8_t* q, int64_t nq, const uint8_t* c, int64_t nr, int64_t nbytes,
                  int32_t* out) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nr; ++j)
      out[i * nr + j] = int32_t(hamming(q + i * nbytes, c + j * nbytes, size_t(nbytes)));
}

// IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN included).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise the mantissa
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

void rows_f16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  for (int64_t t = 0; t < nr * d; ++t) dst[t] = half_to_float(src[t]);
}

void rows_bf16_to_f32(const uint16_t* src, int64_t nr, int64_t d, float* dst) {
  for (int64_t t = 0; t < nr * d; ++t) {
    const uint32_t bits = uint32_t(src[t]) << 16;
    __builtin_memcpy(dst + t, &bits, 4);
  }
}

void rows_i8_affine_to_f32(const int8_t* src, int64_t nr, int64_t d, const float* offset,
                           const float* scale, float* dst) {
  for (int64_t j = 0; j < nr; ++j)
    for (int64_t t = 0; t < d; ++t) dst[j * d + t] = offset[t] + scale[t] * float(src[j * d + t]);
}

void sq_norms_f32(const float* c, int64_t nr, int64_t d, float* out) {
  for (int64_t j = 0; j < nr; ++j) out[j] = dot_f32(c + j * d, c + j * d, size_t(d));
}

void tile_dot_norms_f32(const float* q, const float* c, int64_t nr, int64_t d, float* out, float* norm2,
                        int64_t /*ahead*/) {
  tile_dot_f32(q, 1, c, nr, d, out, 0);
  sq_norms_f32(c, nr, d, norm2);
}

}  // namespace

const KernelTable& scalar_kernels() {
  static const KernelTable table{Isa::kScalar,   dot_f32,         l2sq_f32,         dot_i8,
                                 hamming,        tile_dot_f32,    tile_l2_f32,      tile_dot_f32_i8,
                                 tile_dot_i8,    tile_hamming,    rows_f16_to_f32,  rows_bf16_to_f32,
                                 rows_i8_affine_to_f32, nullptr, nullptr, sq_norms_f32, tile_dot_norms_f32};
  return table;
}

}  // namespace embedcore
