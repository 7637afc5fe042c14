// The scalar table: every hot loop this folder provides, as explicit rows.
// This folder is compiled with its own target flags (CMakeLists.txt, mopt_isa_group).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/isa_fns.h"
#include "mopt/registry.h"

namespace mopt {
namespace scalar {
namespace cpu = ::mopt::cpu;
namespace {
#include "kernels/cpu/common/simd_scalar.inc"
#include "kernels/cpu/common/math.inc"
#include "kernels/cpu/common/elementwise.inc"
#include "kernels/cpu/common/gemm_ukernel.inc"
#include "kernels/cpu/common/dwconv.inc"
#include "kernels/cpu/common/pool.inc"
#include "kernels/cpu/common/transpose.inc"
#include "kernels/cpu/common/winograd.inc"
#include "kernels/cpu/common/bsr_gemm.inc"
#include "kernels/cpu/common/cvt_f16.inc"

const cpu::GemmUkernelF32 kGemm{4, 4 * VF::N, &sgemm_ukernel<4, 4>, {&sgemm_ukernel_rows<1, 4>, &sgemm_ukernel_rows<2, 4>, nullptr, nullptr}, nullptr, 0,
                                 &sgemm_fused_for<4, 4>, &sgemm_ukernel_rm<4, 4>};
const cpu::BsrGemmF32 kBsr{1 * VF::N, &bsr_gemm_f32<1, 8>};
}  // namespace
}  // namespace scalar

void register_scalar_kernels(KernelTable& t) {
  using namespace scalar;
  const Isa isa = Isa::kScalar;
  t.add("unary_f32", isa, fn_row(&unary_f32));
  t.add("binary_f32", isa, fn_row(&binary_f32));
  t.add("epilogue_f32", isa, fn_row(&epilogue_f32));
  t.add("softmax_f32", isa, fn_row(&softmax_f32));
  t.add("layernorm_f32", isa, fn_row(&layernorm_f32));
  t.add("rmsnorm_f32", isa, fn_row(&rmsnorm_f32));
  t.add("reduce_sum_f32", isa, fn_row(&reduce_sum_f32));
  t.add("reduce_max_f32", isa, fn_row(&reduce_max_f32));
  t.add("dwconv_f32", isa, fn_row(&dwconv_f32));
  t.add("dwconv_block_f32", isa, fn_row(&dwconv_block_f32));
  t.add("pool_plane_f32", isa, fn_row(&pool_plane_f32));
  t.add("transpose_f32", isa, fn_row(&transpose_f32));
  t.add("wino43_input_f32", isa, fn_row(&wino43_input_f32));
  t.add("wino43_output_f32", isa, fn_row(&wino43_output_f32));
  t.add("cvt_f16_f32", isa, fn_row(&cvt_f16_f32));
  t.add("cvt_f32_f16", isa, fn_row(&cvt_f32_f16));
  t.add("copy_rows_f32", isa, fn_row(&copy_rows_f32));
  t.add("sgemm_ukernel", isa, &kGemm);
  t.add("bsr_gemm_f32", isa, &kBsr);
}

}  // namespace mopt
