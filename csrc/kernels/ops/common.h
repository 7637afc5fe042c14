// Helpers shared by the op kernels (baseline ISA).
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/isa_fns.h"
#include "mopt/kernel.h"
#include "mopt/program.h"
#include "mopt/status.h"
#include "mopt/tensor.h"
#include "mopt/thread_pool.h"

namespace mopt {

// Registration lists, one per op family (called in order by op_registry()).
void register_elementwise_ops(OpRegistry& r);
void register_gemm_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_pool_ops(OpRegistry& r);
void register_norm_ops(OpRegistry& r);
void register_shape_ops(OpRegistry& r);
void register_data_ops(OpRegistry& r);
void register_fused_attention_ops(OpRegistry& r);  // attention.cc: com.mopt.Attention
void register_math_ops(OpRegistry& r);  // math_ops.cc
void register_reduce_ops(OpRegistry& r);  // reduce_ops.cc
void register_index_ops(OpRegistry& r);  // index_ops.cc
void register_loss_ops(OpRegistry& r);  // loss_ops.cc
void register_attention_ops(OpRegistry& r);  // attention_ops.cc
void register_misc_ops(OpRegistry& r);  // misc_ops.cc
void register_resize_ops(OpRegistry& r);  // resize_ops.cc
void register_seq_ops(OpRegistry& r);  // seq_ops.cc
void register_grid_ops(OpRegistry& r);  // grid_ops.cc
void register_convt_ops(OpRegistry& r);  // convt_ops.cc
void register_detect_ops(OpRegistry& r);  // detect_ops.cc
void register_quant_ops(OpRegistry& r);
void register_einsum_ops(OpRegistry& r);  // einsum_ops.cc
void register_dft_ops(OpRegistry& r);  // dft_ops.cc
void register_rnn_ops(OpRegistry& r);  // rnn_ops.cc
void register_control_flow_ops(OpRegistry& r);  // control_flow.cc: If, Loop, Scan
void register_group_norm_ops(OpRegistry& r);  // group_norm_ops.cc: GroupNormalization
void register_roi_ops(OpRegistry& r);  // roi_ops.cc: RoiAlign
void register_pool_nd_ops(OpRegistry& r);  // pool_nd_ops.cc: N-D and integer MaxPool/AveragePool, LpPool
void register_qlinear_ops(OpRegistry& r);  // qlinear_ops.cc: QLinearMatMul, ConvInteger, DynamicQuantizeLinear
void register_linalg_ops(OpRegistry& r);  // linalg_ops.cc: Det
void register_image_ops(OpRegistry& r);  // image_ops.cc: AffineGrid, Col2Im
void register_deform_ops(OpRegistry& r);  // deform_ops.cc: DeformConv

// Numpy broadcasting of two shapes, with runs of dimensions merged where both operands either
// broadcast or not. The innermost merged dimension has stride 1 or 0 for each operand.
struct Broadcast {
  Shape out;                  // the broadcast shape
  std::vector<int64_t> dims;  // merged dimensions (outermost first); empty when out has no elements to index
  std::vector<int64_t> sa, sb;  // element strides of a and b per merged dimension (0 = broadcast)
};
bool broadcast_shapes(const Shape& a, const Shape& b, Shape* out);
Shape broadcast_or_fail(const Shape& a, const Shape& b);  // throws kRuntime naming both shapes
Broadcast make_broadcast(const Shape& a, const Shape& b);  // throws kRuntime when incompatible
// The numpy broadcast of every input's shape (variadic Sum/Mean/Max/Min); throws naming the input.
Shape broadcast_inputs(const KernelContext& ctx);
// numpy matmul of shapes a and b (rank >= 1; a 1-D operand gains a unit dimension that the result
// drops): M, K, N, each operand's batch dimensions, their broadcast, and the result's shape.
// Throws naming both shapes when the inner or the batch dimensions disagree.
struct MatMulShape {
  int64_t M = 0, K = 0, N = 0;
  Shape a_batch, b_batch, batch, out;
};
MatMulShape matmul_shape(const Shape& a, const Shape& b);
// A small int32/int64 input (starts, axes, shape) as int64 values; throws naming `what`.
std::vector<int64_t> read_ints(const Tensor& t, const char* what);

// A reduction's attributes (keepdims, noop_with_empty_axes, axes) and their resolution per run.
struct ReduceSpec {
  explicit ReduceSpec(const Attrs& attrs);
  // The axes of x the node reduces (input 1 when given, else the attribute) and the output shape.
  // Returns false when there is nothing to reduce (no axes with noop_with_empty_axes): y = x has
  // then been written.
  bool resolve(KernelContext& ctx, const Tensor& x, std::vector<bool>* red, Shape* out) const;
  bool keepdims = true, noop = false;
  std::vector<int64_t> attr_axes;
};

// Which of `rank` axes a reduction over `axes` reduces (all when `axes` is empty); throws on a
// repeated or out-of-range axis.
std::vector<bool> reduced_axes(const std::vector<int64_t>& axes, int64_t rank);

// Calls fn(offset_a, offset_b, offset_out, n, mode) for every innermost run of a broadcast;
// mode as in cpu::BinaryF32Fn (0 both vary, 1 a fixed, 2 b fixed). Parallel over runs.
template <class F>
void for_each_run(const Broadcast& bc, ThreadPool& pool, F&& fn) {
  const size_t nd = bc.dims.size();
  if (nd == 0) {
    fn(0, 0, 0, 1, 0);
    return;
  }
  const int64_t inner = bc.dims[nd - 1];
  const int64_t ia = bc.sa[nd - 1], ib = bc.sb[nd - 1];
  int mode = (ia == 0 && ib != 0) ? 1 : (ib == 0 && ia != 0) ? 2 : 0;
  if (ia == 0 && ib == 0) mode = 3;  // both fixed along the run (inner == 1 only)
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= bc.dims[d];
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1));
  pool.parallel_for(outer, grain, [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(nd, 0);
    int64_t rem = b;
    for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
      idx[d] = rem % bc.dims[d];
      rem /= bc.dims[d];
    }
    for (int64_t o = b; o < e; ++o) {
      int64_t oa = 0, ob = 0;
      for (size_t d = 0; d + 1 < nd; ++d) {
        oa += idx[d] * bc.sa[d];
        ob += idx[d] * bc.sb[d];
      }
      fn(oa, ob, o * inner, inner, mode);
      for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
        if (++idx[d] < bc.dims[d]) break;
        idx[d] = 0;
      }
    }
  });
}

// Activation fused into a kernel: from attributes "activation", "activation_alpha", "activation_beta"
// written by the fusion passes (names are ONNX op names: Relu, LeakyRelu, Clip, Sigmoid, ...).
cpu::UnaryParams activation_from_attrs(const Attrs& attrs);
bool unary_from_name(const std::string& op, cpu::UnaryParams* p);  // ONNX op -> UnaryOp

// Reads a scalar (any numeric dtype) as double.
double scalar_as_double(const Tensor& t, int64_t i = 0);

// Copies bytes in parallel (large tensors) or inline (small ones).
void parallel_copy(ThreadPool& pool, void* dst, const void* src, size_t nbytes);

// Max over 2x2 windows of stride 2 with no padding, one plane: y[OH][OW] from x[..][W], every
// window inside (2 * OH rows and 2 * OW columns of x exist). One branch-free pass per output row.
inline void max_pool_2x2(const float* __restrict xc, float* __restrict yc, int64_t W, int64_t OH, int64_t OW) {
  for (int64_t oy = 0; oy < OH; ++oy) {
    const float* r0 = xc + 2 * oy * W;
    const float* r1 = r0 + W;
    float* yr = yc + oy * OW;
    for (int64_t ox = 0; ox < OW; ++ox) {
      const float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
      const float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
      yr[ox] = a > b ? a : b;
    }
  }
}

}  // namespace mopt
