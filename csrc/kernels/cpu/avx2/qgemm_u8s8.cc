// AVX2 int8 GEMM without VNNI. vpmaddubsw would saturate its int16 pair sums (255*127*2 > 32767),
// so both operands are widened to int16 and multiplied with vpmaddwd, whose int32 pair sums are
// exact: the even bytes of each 4-byte group (k0, k2) and the odd ones (k1, k3) go in separate
// multiplies against the matching broadcast pairs of A.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/qgemm_fns.h"
#include "mopt/registry.h"

namespace mopt {
namespace avx2 {
namespace cpu = ::mopt::cpu;
namespace {
#include "kernels/cpu/common/simd_avx2.inc"
// VF::N exact integer sums (floats) to uint8: clamp(round((bias + s) * scale) + zp, lo, hi), the
// rounding to nearest even of the default MXCSR mode, as std::nearbyint in the scalar path.
inline void q_requant_vf(const VF& s, int32_t bias, float scale, int32_t zp, int32_t lo, int32_t hi, uint8_t* out) {
  const __m256i t = _mm256_add_epi32(_mm256_cvttps_epi32(s.v), _mm256_set1_epi32(bias));
  __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(scale))),
                               _mm256_set1_epi32(zp));
  q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(w, w));
}
// d[i] = s[i] - zx as floats, i < n: 8 bytes at a time, then the rest one by one.
inline void q_widen_row(const uint8_t* s, int64_t n, int32_t zx, float* d) {
  const __m256i z = _mm256_set1_epi32(zx);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_ps(d + i, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, z)));
  }
  for (; i < n; ++i) d[i] = static_cast<float>(static_cast<int32_t>(s[i]) - zx);
}
// s[j] - zx as floats, the even j to d0[j / 2] and the odd ones to d1[j / 2], j < n: 16 bytes at a
// time, split by in-lane shuffles and a lane permute.
inline void q_widen_row2(const uint8_t* s, int64_t n, int32_t zx, float* d0, float* d1) {
  const __m256i z = _mm256_set1_epi32(zx);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 a = _mm256_cvtepi32_ps(_mm256_sub_epi32(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + j))), z));
    const __m256 b = _mm256_cvtepi32_ps(_mm256_sub_epi32(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + j + 8))), z));
    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
    const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(d0 + j / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0))));
    _mm256_storeu_ps(d1 + j / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0))));
  }
  for (; j < n; ++j) (j % 2 ? d1 : d0)[j / 2] = static_cast<float>(static_cast<int32_t>(s[j]) - zx);
}
#include "kernels/cpu/common/qgemm_common.inc"

// 8 floats at a time: divide, clamp, round to nearest even (the MXCSR default), add the zero point,
// then the low bytes of the int32 lanes.
void quantize_f32_8(const float* x, int64_t n, float scale, float zp, float lo, float hi, void* y) {
  uint8_t* yq = static_cast<uint8_t*>(y);
  const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zp), vl = _mm256_set1_ps(lo), vh = _mm256_set1_ps(hi);
  const __m256i bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                         0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs), vl), vh);
    v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    const __m256i q = _mm256_shuffle_epi8(_mm256_cvtps_epi32(v), bytes);
    const uint32_t a = static_cast<uint32_t>(_mm256_extract_epi32(q, 0)), b = static_cast<uint32_t>(_mm256_extract_epi32(q, 4));
    const uint64_t packed = a | (static_cast<uint64_t>(b) << 32);
    std::memcpy(yq + i, &packed, 8);
  }
  quantize_f32_scalar(x + i, n - i, scale, zp, lo, hi, yq + i);
}

inline uint32_t q_pair(int32_t lo, int32_t hi) {
  return static_cast<uint32_t>(static_cast<uint16_t>(lo)) | (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16);
}

template <int MR, int NV, bool AU>
void qgemm_avx2(int64_t k4, const void* a, const void* b, void* c, int64_t ldc, int rows, int cols, int64_t row0,
                int64_t col0, const cpu::QEpilogue& e) {
  constexpr int NR = NV * 8;
  __m256i acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_si256();
  const uint8_t* ap = static_cast<const uint8_t*>(a);
  const uint8_t* bp = static_cast<const uint8_t*>(b);
  const __m256i lowbyte = _mm256_set1_epi16(0x00FF);
  for (int64_t k = 0; k < k4; ++k) {
    __m256i lo[NV], hi[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + (k * NR + j * 8) * 4));
      if (AU) {  // B signed
        lo[j] = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
        hi[j] = _mm256_srai_epi16(v, 8);
      } else {  // B unsigned
        lo[j] = _mm256_and_si256(v, lowbyte);
        hi[j] = _mm256_srli_epi16(v, 8);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const uint8_t* a4 = ap + (k * MR + i) * 4;
      int32_t x[4];
      for (int t = 0; t < 4; ++t) x[t] = AU ? static_cast<int32_t>(a4[t]) : static_cast<int32_t>(static_cast<int8_t>(a4[t]));
      const __m256i alo = _mm256_set1_epi32(static_cast<int32_t>(q_pair(x[0], x[2])));
      const __m256i ahi = _mm256_set1_epi32(static_cast<int32_t>(q_pair(x[1], x[3])));
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(lo[j], alo));
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(hi[j], ahi));
      }
    }
  }
  if (e.pool || rows != MR || cols != NR) {  // (a pooled tile: the portable epilogue)
    alignas(32) int32_t tile[MR * NR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(tile + i * NR + j * 8), acc[i][j]);
    q_store_tile(tile, NR, c, ldc, rows, cols, row0, col0, e);
    return;
  }
  const __m256 flo = _mm256_set1_ps(e.flo), fhi = _mm256_set1_ps(e.fhi);
  const __m256i zp = _mm256_set1_epi32(e.zp), qlo = _mm256_set1_epi32(e.lo), qhi = _mm256_set1_epi32(e.hi);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      __m256i bias;
      __m256 sc;
      if (e.channel_axis == 0) {
        bias = _mm256_set1_epi32(e.bias[row0 + i]);
        sc = _mm256_set1_ps(e.scale[row0 + i]);
      } else {
        bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.bias + col0 + j * 8));
        sc = _mm256_loadu_ps(e.scale + col0 + j * 8);
      }
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc[i][j], bias)), sc);
      if (e.out_u8) {
        __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
        q = _mm256_min_epi32(_mm256_max_epi32(q, qlo), qhi);
        const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(c) + i * ldc + j * 8), _mm_packus_epi16(w16, w16));
      } else {
        _mm256_storeu_ps(static_cast<float*>(c) + i * ldc + j * 8, _mm256_min_ps(_mm256_max_ps(v, flo), fhi));
      }
    }
  }
}

const cpu::QGemmUkernel kS8U8{4, 16, &qgemm_avx2<4, 2, false>};
const cpu::QGemmUkernel kU8S8{4, 16, &qgemm_avx2<4, 2, true>};
}  // namespace
}  // namespace avx2

void register_avx2_qgemm_kernels(KernelTable& t) {
  t.add("qgemm_s8u8", Isa::kAvx2, &avx2::kS8U8);
  t.add("qgemm_u8s8", Isa::kAvx2, &avx2::kU8S8);
  t.add("qdwconv_u8", Isa::kAvx2, fn_row(&avx2::qdwconv_u8));
  t.add("quantize_f32_8", Isa::kAvx2, fn_row(&avx2::quantize_f32_8));
}

}  // namespace mopt
