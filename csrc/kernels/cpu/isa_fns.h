// Signatures of the hot loops in the per-ISA tables. Each row name in register_<isa>_kernels has
// exactly one of these types; op kernels (compiled for the baseline ISA) look them up by name.
#pragma once

#include <cstdint>

namespace mopt::cpu {

// Elementwise unary maps; also the activations fused into GEMM/conv epilogues.
enum class UnaryOp : int32_t {
  kIdentity = 0,
  kRelu,
  kLeakyRelu,    // alpha
  kClip,         // [alpha, beta]
  kSigmoid,
  kTanh,
  kGelu,         // erf form
  kGeluTanh,     // tanh approximation
  kHardSigmoid,  // max(0, min(1, alpha*x + beta))
  kHardSwish,
  kElu,          // alpha
  kSelu,         // alpha, beta=gamma
  kSoftplus,
  kExp,
  kErf,
  kNeg,
  kAbs,
  kSqrt,
  kReciprocal,
  kFloor,
  kCeil,
  kSilu,         // x * sigmoid(x) (SiLU / Swish: Llama's gate, YOLO's and EfficientNet's convolutions)
  kCount
};

struct UnaryParams {
  UnaryOp op = UnaryOp::kIdentity;
  float alpha = 0.f;
  float beta = 0.f;
};

// y[i] = op(x[i]) for i in [0, n). x and y may be the same array.
using UnaryF32Fn = void (*)(const float* x, float* y, int64_t n, const UnaryParams& p);

enum class BinaryOp : int32_t { kAdd = 0, kSub, kMul, kDiv, kMax, kMin, kCount };

// mode 0: y[i] = a[i] op b[i];  mode 1: y[i] = a[0] op b[i];  mode 2: y[i] = a[i] op b[0].
using BinaryF32Fn = void (*)(BinaryOp op, const float* a, const float* b, float* y, int64_t n, int mode);

// What a GEMM or convolution applies to its result tile before it is stored for good:
// c = act(alpha * c + bias + res_scale * residual).
struct Epilogue {
  float alpha = 1.f;
  const float* bias = nullptr;
  int bias_axis = 0;               // 0: one value per row (M), 1: one per column (N)
  const float* residual = nullptr; // element (i, j) at residual[i * res_rs + j * res_cs]
  int64_t res_rs = 0;
  int64_t res_cs = 0;
  float res_scale = 1.f;
  UnaryParams act;

  bool trivial() const {
    return alpha == 1.f && !bias && !residual && act.op == UnaryOp::kIdentity;
  }
};

// Applies `e` to the rows x cols tile at c (leading dimension ldc) whose top-left element is
// (row0, col0) of the whole output; bias and residual are indexed by the global position.
using EpilogueF32Fn = void (*)(float* c, int64_t ldc, int64_t rows, int64_t cols, int64_t row0,
                               int64_t col0, const Epilogue& e);

// The micro-kernels' `accumulate`: 0 stores the tile, 1 adds it to C; fn, fn_rm and fused also
// take kGemmStream: stored with non-temporal stores where C's rows are vector-aligned (a C far
// larger than the caches, whose lines would otherwise be read in from memory only to be
// overwritten; the caller fences).
constexpr int kGemmStream = 2;

// C[MR x NR] (+)= A_panel[kc x MR] * B_panel[kc x NR]; panels are packed k-major.
// rows[r] (r = 0..3 for 1, 2, 4, 8 rows, null where not below MR): the same for a short panel,
// reading the first 1/2/4/8 rows of an A panel whose k-step is a_step floats, so a few leftover
// rows (M = 1 for a batch-1 fully connected layer) cost only their own arithmetic.
using GemmRowsF32Fn = void (*)(int64_t kc, const float* a, int64_t a_step, const float* b, float* c, int64_t ldc,
                               int accumulate);
struct GemmUkernelF32 {
  int mr;
  int nr;
  void (*fn)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate);
  GemmRowsF32Fn rows[4] = {nullptr, nullptr, nullptr, nullptr};
  // mr rows by the first edge_cols columns of an nr-wide B panel (a column edge), if any
  void (*edge)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate) = nullptr;
  int edge_cols = 0;
  // The full tile finished as it leaves the registers, for the last depth block: the epilogue's
  // alpha, bias, residual (unit column stride) and activation, the tile's element (i, j) being
  // (row0 + i, col0 + j) of the epilogue's output. `fused` gives the kernel for an activation, or
  // null where there is none (the tile is then stored and the epilogue run over it).
  // `a` is a packed panel, or with lda > 0 mr rows of a row-major A read in place (as fn_rm).
  using FusedFn = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                           int accumulate, const Epilogue& e, int64_t row0, int64_t col0);
  FusedFn (*fused)(UnaryOp op) = nullptr;
  // fn over mr rows of a row-major A (row stride lda, unit column stride) read in place, if any.
  void (*fn_rm)(int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int accumulate) = nullptr;
};

// Packing rows from scattered places: dst row r (dst + r * dst_stride) gets the `len` floats at
// src + offs[r] + t * step, t < len. The im2col panels of a convolution over a pre-padded image
// are made of these (step: the convolution's column stride).
using CopyRowsF32Fn = void (*)(const float* src, const int64_t* offs, int64_t rows, int64_t len, int64_t step,
                               float* dst, int64_t dst_stride);

// Block-sparse GEMM, C = A * B with B [K x N] stored as block-CSR over 1 x kBsrCols blocks (one row
// of K, kBsrCols consecutive columns of N): for column block jb, blocks ptr[jb]..ptr[jb+1]-1 sit at
// rows kidx[p] with values val[p * kBsrCols ...] (columns past N are zero).
constexpr int kBsrCols = 8;
struct BsrGemmArgs {
  const float* a;        // A rows [rows x K], row stride lda, unit column stride
  int64_t lda, rows;
  const int32_t* ptr;    // [N / kBsrCols rounded up, + 1]
  const int32_t* kidx;   // [nnz blocks]
  const float* val;      // [nnz blocks x kBsrCols]
  int64_t K, N;
  int64_t jb0, jb1;      // the column blocks to compute
  float* c;              // C at row 0, column 0 (the columns of the blocks are written, no epilogue)
  int64_t ldc;
  float* scratch;        // K * mr floats, private to the calling thread
};
using BsrGemmF32Fn = void (*)(const BsrGemmArgs& g);
struct BsrGemmF32 {
  int mr;                // rows one call handles at most
  BsrGemmF32Fn fn;
};

// y = softmax(x) (log_softmax when `log`) over one contiguous row of n elements.
using SoftmaxF32Fn = void (*)(const float* x, float* y, int64_t n, int log);

// One row of LayerNormalization: y = (x - mean) / sqrt(var + eps) * scale (+ bias when not null),
// statistics over the n elements in two passes (the second corrects the mean), so a large common
// offset costs no digits. mean / inv (1 / sqrt(var + eps)) are written when not null.
using LayerNormF32Fn = void (*)(const float* x, float* y, int64_t n, const float* scale, const float* bias, float eps,
                                float* mean, float* inv);

// One row of RMSNormalization: y = x / sqrt(mean(x^2) + eps) * scale, over n elements.
using RMSNormF32Fn = void (*)(const float* x, float* y, int64_t n, const float* scale, float eps);

// Peak probe: `iters` rounds of 12 independent FMA chains of full vectors (latency hidden on
// every x86 core with up to 3 FMA units); returns the floating-point operations done.
using FmaProbeFn = double (*)(int64_t iters);

// Sum and max of n contiguous elements.
using ReduceF32Fn = float (*)(const float* x, int64_t n);

// One input channel of a depthwise 2-D convolution, stride and dilation general, feeding `mult`
// output channels (1 for plain depthwise; a group with one input channel and several outputs, or
// a 1-channel image into many filters, has more): the input is padded once for all of them. The
// epilogue's bias and residual are already resolved for these channels.
struct DwConvArgs {
  const float* x;     // [H, W]
  const float* w;     // [mult][KH, KW]
  float* y;           // [mult][OH, OW]
  const float* residual;  // [mult][OH, OW] or nullptr
  float bias;         // used when biases is nullptr (mult 1)
  int64_t H, W, KH, KW, OH, OW, SH, SW, PH, PW, DH, DW;
  UnaryParams act;
  float* scratch;     // dwconv_scratch_floats(*this) floats, private to the calling thread
  int64_t mult;       // output channels from this input (0 counts as 1)
  const float* biases;  // [mult] or nullptr
};
// Scratch one depthwise call needs: the channel zero-padded, each row split into SW column phases
// (so every tap of every output is an in-bounds, unit-stride vector load), with a vector of slack.
inline int64_t dwconv_padded_rows(const DwConvArgs& a) { return (a.OH - 1) * a.SH + (a.KH - 1) * a.DH + 1; }
inline int64_t dwconv_phase_len(const DwConvArgs& a) {  // (a whole number of 64-byte lines)
  return ((a.OW + 15) / 16 * 16 + ((a.KW - 1) * a.DW) / a.SW + 1 + 15) / 16 * 16;
}
inline int64_t dwconv_scratch_floats(const DwConvArgs& a) {
  return dwconv_padded_rows(a) * a.SW * dwconv_phase_len(a);
}
using DwConvF32Fn = void (*)(const DwConvArgs& a);

// Depthwise convolution of a block of up to one vector of channels at once, channels in the vector
// lanes: for small planes (a 7x7 row fills a vector poorly). x, y, residual point at the block's
// first channel plane; channel c of the block is c planes further; w and bias at its first channel.
struct DwConvBlockArgs {
  DwConvArgs geo;        // geometry, activation, scratch (x, w, y, residual, bias unused)
  const float* x;        // [nc][H][W]
  const float* w;        // [nc][KH][KW]
  const float* bias;     // [nc] or nullptr
  float* y;              // [nc][OH][OW]
  const float* residual; // [nc][OH][OW] or nullptr
  int64_t nc;            // channels in this block, 1..lanes
};
// Scratch of one block call: the padded window channels-last, and the result channels-last.
inline int64_t dwconv_block_scratch_floats(const DwConvArgs& a) {
  const int64_t wp = (a.OW - 1) * a.SW + (a.KW - 1) * a.DW + 1;
  return (dwconv_padded_rows(a) * wp + a.OH * a.OW + 1) * 16 + a.KH * a.KW * 16 + a.OH * a.OW + 64;
}
using DwConvBlockF32Fn = void (*)(const DwConvBlockArgs& a);
// One channel of an undilated 2-D max or average pool, NCHW: each output row reduces its window's
// input rows into `tmp` (padded with the reduction's identity), then each output its KW columns.
struct PoolPlaneArgs {
  const float* x;        // [H][W]
  float* y;              // [OH][OW]
  int64_t H, W, OH, OW, KH, KW, SH, SW, PT, PB, PL;
  int max;               // 1: max, 0: average
  int count_pad;         // average: the divisor counts the padding
  float* tmp;            // pool_tmp_floats(*this) floats, private to the calling thread
  const float* inv_cx;   // average: [OW] 1 / (columns counted) of each output column's window
};
inline int64_t pool_padded_width(const PoolPlaneArgs& a) { return (a.OW - 1) * a.SW + a.KW; }
// A 3x3 / stride-1 window padded by one on every side (the output the input's size): the plane is
// reduced as one flat array, down then across, and its border fixed up after.
inline bool pool_same3x3(const PoolPlaneArgs& a) {
  return a.KH == 3 && a.KW == 3 && a.SH == 1 && a.SW == 1 && a.PT == 1 && a.PL == 1 && a.PB == 1 && a.OH == a.H &&
         a.OW == a.W && a.H >= 2 && a.W >= 2;
}
// Output rows reduced down their windows per block (about 16 KB of padded rows), then across: a row
// read back just after it was stored stalled on the stores still in flight.
inline int64_t pool_row_stride(const PoolPlaneArgs& a) { return (pool_padded_width(a) + 15) / 16 * 16; }
inline int64_t pool_row_block(const PoolPlaneArgs& a) {
  const int64_t rows = 4096 / pool_row_stride(a);
  return rows < 1 ? 1 : rows > a.OH ? a.OH : rows;
}
inline int64_t pool_tmp_floats(const PoolPlaneArgs& a) {
  return (pool_same3x3(a) ? a.H * a.W : pool_row_stride(a) * pool_row_block(a)) + 32;
}
using PoolPlaneF32Fn = void (*)(const PoolPlaneArgs& a);

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols.
using TransposeF32Fn = void (*)(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd);

// y[i] = float(x[i]) for n IEEE float16 values (bit patterns) x: exact, so every ISA agrees bit for bit.
using CvtF16F32Fn = void (*)(const uint16_t* x, float* y, int64_t n);
// y[i] = float16(x[i]), rounded to nearest even (NaN stays NaN, overflow gives inf): every ISA agrees.
using CvtF32F16Fn = void (*)(const float* x, uint16_t* y, int64_t n);

// Winograd F(4x4, 3x3): each 4x4 block of outputs of a 3x3 / stride-1 convolution comes from a 6x6
// input tile, transformed (B^T d B), multiplied elementwise by the transformed filter (G g G^T) and
// summed over channels (36 GEMMs, one per tile position xi), then transformed back (A^T m A).
// A call covers `rows` tile rows from ty0; tiles are numbered u = (ty - ty0) * tiles_w + tx, and a
// vector of them is transformed at once. tiles_pad: the call's tiles rounded up to 16.
struct Wino43InArgs {
  const float* x;          // one input channel [H][W]
  int64_t H, W, PT, PL;    // its size and the convolution's top/left padding
  int64_t ty0, rows, tiles_w, tiles_pad;
  int64_t nr;              // GEMM B panel width (a multiple of the vector width)
  float* v;                // (xi, u) of this channel at v[xi * xi_stride + (u / nr) * panel_stride + u % nr]
                           // (B panels of nr columns, the last one possibly partly used)
  int64_t xi_stride, panel_stride;
  float* scratch;          // wino43_in_scratch_floats(tiles_pad, tiles_w), private to the thread
};
inline int64_t wino43_q_len(int64_t tiles_pad) { return (tiles_pad + 15) / 16 * 16; }
inline int64_t wino43_in_scratch_floats(int64_t tiles_pad, int64_t tiles_w) {
  return 36 * wino43_q_len(tiles_pad) + 4 * tiles_w + 4 + 16;
}
using Wino43InF32Fn = void (*)(const Wino43InArgs& a);
// One output channel: m holds the channel's 36 GEMM results, (xi, u) at m[xi * xi_stride + u]; the
// 4x4 outputs are stored into the plane y [OH][OW] (tile rows ty0.. of it), no epilogue applied.
struct Wino43OutArgs {
  const float* m;
  int64_t xi_stride;
  float* y;
  int64_t OH, OW, ty0, rows, tiles_w, tiles_pad;
  float* scratch;          // 16 * tiles_pad floats, private to the thread
};
using Wino43OutF32Fn = void (*)(const Wino43OutArgs& a);

}  // namespace mopt::cpu
