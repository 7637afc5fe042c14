// Signatures of the int8 hot loops (rows "qgemm_s8u8", "qgemm_u8s8", "qdwconv_u8"). An int8 GEMM
// multiplies a broadcast operand A (MR rows) by a vector operand B (NR columns), one signed and
// one unsigned, with exact 32-bit accumulation, then requantizes or dequantizes in registers.
#pragma once

#include <cstdint>

namespace mopt::cpu {

// What happens to an int32 accumulator before it is stored: v = (acc + bias[ch]) * scale[ch], with
// ch the row (channel_axis 0) or the column (1); then either q = clamp(round(v) + zp, lo, hi) as
// uint8 (out_u8) or v clamped to [flo, fhi] as float (fused Relu / Clip).
struct QEpilogue {
  const int32_t* bias = nullptr;  // per channel (zero-point correction folded in); never null
  const float* scale = nullptr;   // per channel; never null
  int channel_axis = 0;
  int out_u8 = 1;
  int32_t zp = 0, lo = 0, hi = 255;
  float flo = -3.4e38f, fhi = 3.4e38f;
  // 1: a 2x2 max pool of the tile before the epilogue (channel_axis 0). The tile's columns are
  // two halves of NR / 2, pixels (2y, 2x + t) and (2y + 1, 2x + t) for t < NR / 2; pooled output
  // j is the largest of columns 2j, 2j + 1 of both halves, and `cols` counts pooled outputs (up
  // to NR / 4). The epilogue is monotonic, so this is the pool of the requantized values.
  int pool = 0;
};

// Panels are packed k-major in groups of 4 along K: A as [K4][MR][4], B as [K4][NR][4] bytes,
// zero-padded past K. Computes the MR x NR tile, stores its rows x cols corner at c (element (i, j)
// at c + i*ldc + j, uint8 or float per e.out_u8); row0/col0 locate the tile for per-channel data.
struct QGemmUkernel {
  int mr;
  int nr;
  void (*fn)(int64_t k4, const void* a, const void* b, void* c, int64_t ldc, int rows, int cols, int64_t row0,
             int64_t col0, const QEpilogue& e);
};

// One channel of a depthwise int8 convolution. `x` is the channel zero-padded and with its zero
// point already subtracted, as float [PH_total][PW_total] (row stride xs; every value an integer);
// w is [KH][KW] int8. acc[oy][ox] = sum w * x over the window; then the epilogue (channel =
// `channel`). The flat stride-1 loop reads up to 64 floats past the plane.
struct QDwArgs {
  float* x;             // (written by the kernel when src is set)
  int64_t xs;
  const int8_t* w;
  int64_t KH, KW, OH, OW, SH, SW, DH, DW;
  void* y;              // [OH][OW] uint8 or float
  int64_t channel;      // index into e.bias / e.scale
  float* acc;           // OH * xs floats of scratch (stride 1 or 2, equal strides) or OH * OW
  int32_t* iacc;        // as many int32, and 64 more (the flat loop's blocks of vectors round up)
  // When src is set, the kernel first writes the channel's interior into the plane: x at row
  // PT + iy, column PL + ix holds src[iy * W + ix] - zx; the padding is the caller's (zeros).
  const uint8_t* src = nullptr;
  int64_t H = 0, W = 0, PT = 0, PL = 0;
  int32_t zx = 0;
  // Stride 2 (both axes), when > 0: the plane is stored as four phase planes of this many floats
  // each, ((r % 2) * 2 + c % 2) holding pixels (r, c) at (r / 2) * xs / 2 + c / 2 (xs even), and
  // slack after the fourth; src must then be set.
  int64_t phase = 0;
};
using QDwConvFn = void (*)(const QDwArgs& a, const QEpilogue& e);

// Per-tensor QuantizeLinear to 8 bits: y[i] = round_half_even(clamp(x[i] / scale, lo, hi)) + zp,
// where lo, hi are the output range minus zp (so the sum is in range); y is uint8 or, with
// out_signed, int8 (the same low byte).
using QuantizeF32Fn = void (*)(const float* x, int64_t n, float scale, float zp, float lo, float hi, void* y);

}  // namespace mopt::cpu
