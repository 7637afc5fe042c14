// The scalar int8 rows: the portable micro-kernels and the depthwise loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/qgemm_fns.h"
#include "mopt/registry.h"

namespace mopt {
namespace scalar {
namespace cpu = ::mopt::cpu;
namespace {
#include "kernels/cpu/common/simd_scalar.inc"
// VF::N exact integer sums (floats) to uint8: clamp(round((bias + s) * scale) + zp, lo, hi).
inline void q_requant_vf(const VF& s, int32_t bias, float scale, int32_t zp, int32_t lo, int32_t hi, uint8_t* out) {
  for (int j = 0; j < VF::N; ++j) {
    const float v = static_cast<float>(bias + static_cast<int32_t>(s.v[j])) * scale;
    out[j] = static_cast<uint8_t>(std::min(std::max(static_cast<int32_t>(std::nearbyint(v)) + zp, lo), hi));
  }
}
// d[i] = s[i] - zx as floats, i < n.
inline void q_widen_row(const uint8_t* s, int64_t n, int32_t zx, float* d) {
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(static_cast<int32_t>(s[i]) - zx);
}
// s[j] - zx as floats, the even j to d0[j / 2] and the odd ones to d1[j / 2], j < n.
inline void q_widen_row2(const uint8_t* s, int64_t n, int32_t zx, float* d0, float* d1) {
  for (int64_t j = 0; j < n; ++j) (j % 2 ? d1 : d0)[j / 2] = static_cast<float>(static_cast<int32_t>(s[j]) - zx);
}
#include "kernels/cpu/common/qgemm_common.inc"

void quantize_f32_8(const float* x, int64_t n, float scale, float zp, float lo, float hi, void* y) {
  quantize_f32_scalar(x, n, scale, zp, lo, hi, static_cast<uint8_t*>(y));
}

const cpu::QGemmUkernel kS8U8{4, 8, &qgemm_portable<4, 8, false>};
const cpu::QGemmUkernel kU8S8{4, 8, &qgemm_portable<4, 8, true>};
}  // namespace
}  // namespace scalar

void register_scalar_qgemm_kernels(KernelTable& t) {
  t.add("qgemm_s8u8", Isa::kScalar, &scalar::kS8U8);
  t.add("qgemm_u8s8", Isa::kScalar, &scalar::kU8S8);
  t.add("qdwconv_u8", Isa::kScalar, fn_row(&scalar::qdwconv_u8));
  t.add("quantize_f32_8", Isa::kScalar, fn_row(&scalar::quantize_f32_8));
}

}  // namespace mopt
