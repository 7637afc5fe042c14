// The scalar int8 rows: the portable micro-kernels and the depthwise loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/qgemm_fns.h"
#include "mopt/registry.h"

namespace mopt {
namespace scalar {
namespace cpu = ::mopt::cpu;
namespace {
#include "kernels/cpu/common/simd_scalar.inc"
#include "kernels/cpu/common/qgemm_common.inc"

const cpu::QGemmUkernel kS8U8{4, 8, &qgemm_portable<4, 8, false>};
const cpu::QGemmUkernel kU8S8{4, 8, &qgemm_portable<4, 8, true>};
}  // namespace
}  // namespace scalar

void register_scalar_qgemm_kernels(KernelTable& t) {
  t.add("qgemm_s8u8", Isa::kScalar, &scalar::kS8U8);
  t.add("qgemm_u8s8", Isa::kScalar, &scalar::kU8S8);
  t.add("qdwconv_u8", Isa::kScalar, fn_row(&scalar::qdwconv_u8));
}

}  // namespace mopt
