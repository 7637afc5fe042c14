// AVX-512 VNNI int8 GEMM: vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the four
// products to an int32 lane with no intermediate saturation. Only this function is compiled for
// VNNI (target attribute), and its rows are registered only on hosts that have it; an AVX-512 CPU
// without VNNI gets the AVX2 rows.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/qgemm_fns.h"
#include "mopt/cpu_features.h"
#include "mopt/registry.h"

namespace mopt {
namespace avx512 {
namespace cpu = ::mopt::cpu;
namespace {
#include "kernels/cpu/common/simd_avx512.inc"
// VF::N exact integer sums (floats) to uint8: clamp(round((bias + s) * scale) + zp, lo, hi), the
// rounding to nearest even of the default MXCSR mode, as std::nearbyint in the scalar path.
inline void q_requant_vf(const VF& s, int32_t bias, float scale, int32_t zp, int32_t lo, int32_t hi, uint8_t* out) {
  const __m512i t = _mm512_add_epi32(_mm512_cvttps_epi32(s.v), _mm512_set1_epi32(bias));
  __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(scale))),
                               _mm512_set1_epi32(zp));
  q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(lo)), _mm512_set1_epi32(hi));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(q));
}
// d[i] = s[i] - zx as floats, i < n: 16 bytes at a time, the rest under a mask.
inline void q_widen_row(const uint8_t* s, int64_t n, int32_t zx, float* d) {
  const __m512i z = _mm512_set1_epi32(zx);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm512_storeu_ps(d + i, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, s + i));
    _mm512_mask_storeu_ps(d + i, m, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)));
  }
}
// s[j] - zx as floats, the even j to d0[j / 2] and the odd ones to d1[j / 2], j < n: 32 bytes at a
// time, split by two-source permutes.
inline void q_widen_row2(const uint8_t* s, int64_t n, int32_t zx, float* d0, float* d1) {
  const __m512i z = _mm512_set1_epi32(zx);
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m512 a = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j))), z));
    const __m512 b = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j + 16))), z));
    _mm512_storeu_ps(d0 + j / 2, _mm512_permutex2var_ps(a, ev, b));
    _mm512_storeu_ps(d1 + j / 2, _mm512_permutex2var_ps(a, od, b));
  }
  if (j < n) {  // the last n - j < 32 bytes under masks: (n - j + 1) / 2 even ones, (n - j) / 2 odd ones
    const int64_t r = n - j;
    const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << r) - 1);
    const __m256i v = _mm256_maskz_loadu_epi8(m, s + j);
    const __m512 a = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(v)), z));
    const __m512 b = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(v, 1)), z));
    _mm512_mask_storeu_ps(d0 + j / 2, static_cast<__mmask16>((1u << ((r + 1) / 2)) - 1), _mm512_permutex2var_ps(a, ev, b));
    _mm512_mask_storeu_ps(d1 + j / 2, static_cast<__mmask16>((1u << (r / 2)) - 1), _mm512_permutex2var_ps(a, od, b));
  }
}
#include "kernels/cpu/common/qgemm_common.inc"

// 16 floats at a time (the tail under a mask): divide, clamp, round to nearest even, add the zero
// point, then the low bytes of the int32 lanes.
void quantize_f32_8(const float* x, int64_t n, float scale, float zp, float lo, float hi, void* y) {
  uint8_t* yq = static_cast<uint8_t*>(y);
  const __m512 vs = _mm512_set1_ps(scale), vz = _mm512_set1_ps(zp), vl = _mm512_set1_ps(lo), vh = _mm512_set1_ps(hi);
  auto q16 = [&](__m512 v) {
    v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, vs), vl), vh);
    v = _mm512_add_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(yq + i), q16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm_mask_storeu_epi8(yq + i, m, q16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// acc += dot4(u (unsigned bytes), s (signed bytes)) per int32 lane. Inline asm: with the intrinsic,
// GCC shuffled the accumulator array through copies and stack spills on every k step.
inline void dpbusd(__m512i& acc, __m512i u, __m512i s) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
}

template <int MR, int NV, bool AU>
__attribute__((target("avx512vnni"))) void qgemm_vnni(int64_t k4, const void* a, const void* b, void* c,
                                                      int64_t ldc, int rows, int cols, int64_t row0, int64_t col0,
                                                      const cpu::QEpilogue& e) {
  constexpr int NR = NV * 16;
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_si512();
  const uint8_t* ap = static_cast<const uint8_t*>(a);
  const uint8_t* bp = static_cast<const uint8_t*>(b);
  for (int64_t k = 0; k < k4; ++k) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_si512(bp + (k * NR + j * 16) * 4);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_set1_epi32(q_load4(ap + (k * MR + i) * 4));
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j)
        AU ? dpbusd(acc[i][j], av, bv[j]) : dpbusd(acc[i][j], bv[j], av);
    }
  }
  const bool pooled_fast = e.pool && NV == 2 && MR % 2 == 0 && e.channel_axis == 0 && e.out_u8 && cols == NR / 4;
  if (pooled_fast && rows == MR) {
    // 2x2 max pool in registers: the two image rows' vectors, then each pair of neighbouring
    // lanes (swapped and compared), then the even lanes of two channels gathered into one vector
    // that is requantized at once: 8 bytes per channel
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i zp = _mm512_set1_epi32(e.zp), qlo = _mm512_set1_epi32(e.lo), qhi = _mm512_set1_epi32(e.hi);
    uint8_t* cb = static_cast<uint8_t*>(c);
    auto pairmax = [&](int i) {
      const __m512i m = _mm512_max_epi32(acc[i][0], acc[i][NV - 1]);
      return _mm512_max_epi32(m, _mm512_shuffle_epi32(m, _MM_PERM_CDAB));
    };
#pragma GCC unroll 8
    for (int i = 0; i < MR; i += 2) {
      const __m512i p = _mm512_permutex2var_epi32(pairmax(i), even, pairmax(i + 1));
      const __m512i bias =
          _mm512_inserti64x4(_mm512_set1_epi32(e.bias[row0 + i]), _mm256_set1_epi32(e.bias[row0 + i + 1]), 1);
      const __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(e.scale[row0 + i]), _mm256_set1_ps(e.scale[row0 + i + 1]), 1);
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p, bias)), sc)), zp);
      q = _mm512_min_epi32(_mm512_max_epi32(q, qlo), qhi);
      const __m128i b = _mm512_cvtepi32_epi8(q);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(cb + i * ldc), b);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(cb + (i + 1) * ldc), _mm_unpackhi_epi64(b, b));
    }
    return;
  }
  if (e.pool || rows != MR || cols != NR) {
    alignas(64) int32_t tile[MR * NR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) _mm512_store_si512(tile + i * NR + j * 16, acc[i][j]);
    q_store_tile(tile, NR, c, ldc, rows, cols, row0, col0, e);
    return;
  }
  if (NV == 2 && MR % 2 == 0 && e.channel_axis == 0 && e.out_u8) {
    // per output channel (a row): two rows' four vectors narrowed together with saturating packs
    // (int32 -> int16 -> uint8, the zero point added in int16, saturating), which clamp to [0, 255]
    // as the scalar path does; a dword permute puts each row's 32 bytes back in column order
    const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(e.zp));
    const __m512i lo8 = _mm512_set1_epi8(static_cast<char>(e.lo)), hi8 = _mm512_set1_epi8(static_cast<char>(e.hi));
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    uint8_t* cb = static_cast<uint8_t*>(c);
    auto rounded = [&](int i, int j) {
      const __m512i bias = _mm512_set1_epi32(e.bias[row0 + i]);
      const __m512 sc = _mm512_set1_ps(e.scale[row0 + i]);
      return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[i][j], bias)), sc));
    };
#pragma GCC unroll 8
    for (int i = 0; i < MR; i += 2) {
      const __m512i p0 = _mm512_adds_epi16(_mm512_packs_epi32(rounded(i, 0), rounded(i, 1)), zp16);
      const __m512i p1 = _mm512_adds_epi16(_mm512_packs_epi32(rounded(i + 1, 0), rounded(i + 1, 1)), zp16);
      __m512i b = _mm512_permutexvar_epi32(perm, _mm512_packus_epi16(p0, p1));
      b = _mm512_min_epu8(_mm512_max_epu8(b, lo8), hi8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cb + i * ldc), _mm512_castsi512_si256(b));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cb + (i + 1) * ldc), _mm512_extracti64x4_epi64(b, 1));
    }
    return;
  }
  const __m512 flo = _mm512_set1_ps(e.flo), fhi = _mm512_set1_ps(e.fhi);
  const __m512i zp = _mm512_set1_epi32(e.zp), qlo = _mm512_set1_epi32(e.lo), qhi = _mm512_set1_epi32(e.hi);
  if (e.channel_axis == 0 && !e.out_u8) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512i bias = _mm512_set1_epi32(e.bias[row0 + i]);
      const __m512 sc = _mm512_set1_ps(e.scale[row0 + i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[i][j], bias)), sc);
        _mm512_storeu_ps(static_cast<float*>(c) + i * ldc + j * 16, _mm512_min_ps(_mm512_max_ps(v, flo), fhi));
      }
    }
    return;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      __m512i bias;
      __m512 sc;
      if (e.channel_axis == 0) {
        bias = _mm512_set1_epi32(e.bias[row0 + i]);
        sc = _mm512_set1_ps(e.scale[row0 + i]);
      } else {
        bias = _mm512_loadu_si512(e.bias + col0 + j * 16);
        sc = _mm512_loadu_ps(e.scale + col0 + j * 16);
      }
      const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[i][j], bias)), sc);
      if (e.out_u8) {
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
        q = _mm512_min_epi32(_mm512_max_epi32(q, qlo), qhi);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(c) + i * ldc + j * 16), _mm512_cvtepi32_epi8(q));
      } else {
        _mm512_storeu_ps(static_cast<float*>(c) + i * ldc + j * 16, _mm512_min_ps(_mm512_max_ps(v, flo), fhi));
      }
    }
  }
}

const cpu::QGemmUkernel kS8U8{8, 32, &qgemm_vnni<8, 2, false>};
const cpu::QGemmUkernel kU8S8{8, 32, &qgemm_vnni<8, 2, true>};
}  // namespace
}  // namespace avx512

void register_avx512_qgemm_kernels(KernelTable& t) {
  t.add("qdwconv_u8", Isa::kAvx512, fn_row(&avx512::qdwconv_u8));
  t.add("quantize_f32_8", Isa::kAvx512, fn_row(&avx512::quantize_f32_8));
  if (!cpu_features().avx512vnni) return;
  t.add("qgemm_s8u8", Isa::kAvx512, &avx512::kS8U8);
  t.add("qgemm_u8s8", Isa::kAvx512, &avx512::kU8S8);
}

}  // namespace mopt
