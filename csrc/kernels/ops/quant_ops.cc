// Quantized ops: QuantizeLinear / DequantizeLinear (uint8, int8, int32; per tensor or per axis) and
// the int8 kernels the quantizer emits, in the com.mopt domain:
//   QConv    X uint8 NCHW, W int8 (per-output-channel scales), float bias -> uint8 or float
//   QMatMul  X uint8 [..., K] (or float with dynamic=1: quantized per run), W int8 [K, N] -> uint8 or float
//   QMaxPool X uint8 -> uint8 (max commutes with a monotonic quantization, so no requantize)
// Scales and zero points are attributes: x_scale, x_zero_point, w_scale (1 or per channel),
// y_scale, y_zero_point (uint8 output only); activation Relu or Clip is applied in the requantize.
// The output dtype (uint8 or float) is the one the compiler gave the output value.
// Weights are packed at load: for QConv in (ky, kx, c) order with channels padded to 4, so one
// 4-byte group of K is 4 channels of one pixel of the NHWC copy of the zero-point-padded input.
#if defined(__SSE2__)
#include <emmintrin.h>  // part of the x86-64 baseline
#endif

#include <cmath>

#include "kernels/cpu/qgemm_fns.h"
#include "kernels/ops/common.h"

namespace mopt {
namespace {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int32_t round_i32(double v) { return static_cast<int32_t>(std::nearbyint(v)); }

// Round half to even for |v| < 2^22 by the 1.5 * 2^23 trick: the baseline ISA (no SSE4.1) has no
// rounding instruction, so nearbyint would be a libm call per element; this one vectorizes.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.f;
  return (v + kMagic) - kMagic;
}

const cpu::QGemmUkernel* qgemm_row(const KernelInit& init, const char* name, std::string* impl) {
  return init.fn<const cpu::QGemmUkernel*>(name, impl);
}

// Per-channel requantization data built from the attributes, the float bias and the weight sums.
struct Requant {
  std::vector<int32_t> bias;
  std::vector<float> scale;
  cpu::QEpilogue ep;
};

struct QAttrs {
  double x_scale = 0, y_scale = 0;
  int32_t x_zp = 0, y_zp = 0;
  std::vector<double> w_scale;
  cpu::UnaryParams act;
};

QAttrs read_qattrs(const Attrs& a, int64_t channels, bool need_x) {
  QAttrs q;
  q.x_scale = a.get_float("x_scale", 0.0);
  q.x_zp = static_cast<int32_t>(a.get_int("x_zero_point", 0));
  q.y_scale = a.get_float("y_scale", 0.0);
  q.y_zp = static_cast<int32_t>(a.get_int("y_zero_point", 0));
  q.w_scale = a.get_floats("w_scale", {});
  q.act = activation_from_attrs(a);
  MOPT_CHECK(!need_x || (q.x_scale > 0 && std::isfinite(q.x_scale)), ErrorCode::kInvalidModel,
             "x_scale must be a positive finite number, got ", q.x_scale);
  MOPT_CHECK(q.x_zp >= 0 && q.x_zp <= 255 && q.y_zp >= 0 && q.y_zp <= 255, ErrorCode::kInvalidModel,
             "uint8 zero points must lie in [0, 255]");
  MOPT_CHECK(q.w_scale.size() == 1 || static_cast<int64_t>(q.w_scale.size()) == channels, ErrorCode::kInvalidModel,
             "w_scale has ", q.w_scale.size(), " values; expected 1 or ", channels);
  for (double s : q.w_scale)
    MOPT_CHECK(s > 0 && std::isfinite(s), ErrorCode::kInvalidModel, "w_scale values must be positive and finite");
  MOPT_CHECK(q.act.op == cpu::UnaryOp::kIdentity || q.act.op == cpu::UnaryOp::kRelu || q.act.op == cpu::UnaryOp::kClip,
             ErrorCode::kUnsupported, "int8 kernels fuse only Relu and Clip");
  return q;
}

// acc units: one unit of the int32 accumulator is x_scale * w_scale[ch].
void make_requant(const QAttrs& q, double x_scale, int32_t x_zp, const float* fbias, const std::vector<int64_t>& wsum,
                  bool out_u8, int channel_axis, Requant* r) {
  const size_t n = wsum.size();
  r->bias.resize(n);
  r->scale.resize(n);
  for (size_t c = 0; c < n; ++c) {
    const double unit = x_scale * q.w_scale[q.w_scale.size() == 1 ? 0 : c];
    const double b = fbias ? std::nearbyint(static_cast<double>(fbias[c]) / unit) : 0.0;
    const double total = b - static_cast<double>(x_zp) * static_cast<double>(wsum[c]);
    MOPT_CHECK(std::fabs(total) < 2147483647.0 / 2, ErrorCode::kInvalidModel, "channel ", c, ": the bias is ", b,
               " accumulator units (x_scale * w_scale = ", unit, "), beyond the int32 accumulator");
    r->bias[c] = static_cast<int32_t>(total);
    r->scale[c] = static_cast<float>(out_u8 ? unit / q.y_scale : unit);
  }
  cpu::QEpilogue& e = r->ep;
  e.bias = r->bias.data();
  e.scale = r->scale.data();
  e.channel_axis = channel_axis;
  e.out_u8 = out_u8 ? 1 : 0;
  float flo = -3.4e38f, fhi = 3.4e38f;
  if (q.act.op == cpu::UnaryOp::kRelu) flo = 0.f;
  if (q.act.op == cpu::UnaryOp::kClip) {
    flo = std::max(q.act.alpha, -3.4e38f);
    fhi = std::min(q.act.beta, 3.4e38f);
  }
  e.flo = flo;
  e.fhi = fhi;
  if (out_u8) {
    MOPT_CHECK(q.y_scale > 0 && std::isfinite(q.y_scale), ErrorCode::kInvalidModel,
               "y_scale must be a positive finite number for a uint8 output");
    e.zp = q.y_zp;
    e.lo = 0;
    e.hi = 255;
    // in double and clamped first: Clip(0, 6) over a tiny scale is far outside int32
    auto level = [&](float v) {
      return static_cast<int32_t>(std::min(255.0, std::max(0.0, q.y_zp + std::nearbyint(v / q.y_scale))));
    };
    if (flo > -3.4e38f) e.lo = level(flo);
    if (fhi < 3.4e38f) e.hi = level(fhi);
  }
}

// Packs rows [M][K] of int8 (row stride ld) as [ceil(M/MR)][K4][MR][4] (or, for the B side, the same
// with NR columns: the layout is symmetric). Missing rows and the K tail are zero.
std::vector<int8_t> pack_rows_s8(const int8_t* w, int64_t M, int64_t K, int64_t ld, int64_t cs, int mr) {
  const int64_t K4 = cdiv(K, 4), panels = cdiv(M, mr);
  std::vector<int8_t> out(static_cast<size_t>(panels * K4 * mr * 4), 0);
  for (int64_t m = 0; m < M; ++m) {
    int8_t* dst = out.data() + (m / mr) * K4 * mr * 4 + (m % mr) * 4;
    for (int64_t k = 0; k < K; ++k) dst[(k / 4) * mr * 4 + k % 4] = w[m * ld + k * cs];
  }
  return out;
}

void out_dim(const std::string& auto_pad, int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1,
             int64_t* out, int64_t* pad0) {
  const int64_t ek = (k - 1) * d + 1;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    *out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>(0, (*out - 1) * s + ek - in);
    *pad0 = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    return;
  }
  if (auto_pad == "VALID") p0 = p1 = 0;
  else MOPT_ENSURE(auto_pad == "NOTSET", "auto_pad '", auto_pad, "' is not valid");
  const int64_t span = in + p0 + p1 - ek;
  *out = span < 0 ? 0 : span / s + 1;
  *pad0 = p0;
}

struct Window2D {
  int64_t KH = 1, KW = 1, SH = 1, SW = 1, DH = 1, DW = 1, PT = 0, PL = 0, PB = 0, PR = 0;
  std::string auto_pad;
};

Window2D read_window(const Attrs& a, int64_t KH, int64_t KW, const char* what) {
  Window2D w;
  w.KH = KH;
  w.KW = KW;
  auto st = a.get_ints("strides", {1, 1}), dl = a.get_ints("dilations", {1, 1}), pd = a.get_ints("pads", {0, 0, 0, 0});
  MOPT_CHECK(st.size() == 2 && dl.size() == 2 && pd.size() == 4, ErrorCode::kInvalidModel, what,
             ": only 2-D windows are supported (strides/dilations/pads of length 2/2/4)");
  w.SH = st[0]; w.SW = st[1]; w.DH = dl[0]; w.DW = dl[1];
  w.PT = pd[0]; w.PL = pd[1]; w.PB = pd[2]; w.PR = pd[3];
  for (int64_t v : st) MOPT_CHECK(v >= 1, ErrorCode::kInvalidModel, what, ": strides must be >= 1");
  for (int64_t v : dl) MOPT_CHECK(v >= 1, ErrorCode::kInvalidModel, what, ": dilations must be >= 1");
  for (int64_t v : pd) MOPT_CHECK(v >= 0, ErrorCode::kInvalidModel, what, ": pads must be >= 0");
  w.auto_pad = a.get_string("auto_pad", "NOTSET");
  return w;
}

// Writes len pixels x 4 planes as 4-byte groups: d[j * 4 + q] = p[q][off + j * stride] (0 for a
// missing plane). SSE2 byte/word unpacks for runs of 16 unit-stride pixels.
inline __attribute__((always_inline)) void interleave4(const uint8_t* const p[4], int64_t off, int64_t stride, int len,
                                                     uint8_t* d) {
  int j = 0;
#if defined(__SSE2__)
  if (stride == 1 && p[0] && p[1] && p[2] && p[3]) {
    for (; j + 16 <= len; j += 16) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[0] + off + j));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[1] + off + j));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[2] + off + j));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p[3] + off + j));
      const __m128i ab0 = _mm_unpacklo_epi8(a, b), ab1 = _mm_unpackhi_epi8(a, b);
      const __m128i ce0 = _mm_unpacklo_epi8(c, e), ce1 = _mm_unpackhi_epi8(c, e);
      __m128i* o = reinterpret_cast<__m128i*>(d + j * 4);
      _mm_storeu_si128(o, _mm_unpacklo_epi16(ab0, ce0));
      _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(ab0, ce0));
      _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(ab1, ce1));
      _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(ab1, ce1));
    }
  }
#endif
  for (int q = 0; q < 4; ++q) {
    if (!p[q]) {
      for (int i = j; i < len; ++i) d[i * 4 + q] = 0;
      continue;
    }
    const uint8_t* s = p[q] + off;
    for (int i = j; i < len; ++i) d[i * 4 + q] = s[i * stride];
  }
}

// ---- QConv ------------------------------------------------------------------------------------
class QConvKernel final : public Kernel {
 public:
  explicit QConvKernel(const KernelInit& init) : attrs_(init.attrs) {
    const Tensor* w = init.const_input(1);
    MOPT_CHECK(w && w->dtype == DType::kI8 && w->rank() == 4, ErrorCode::kInvalidModel,
               "QConv needs constant int8 weights [M, C/group, KH, KW]");
    MOPT_CHECK(init.consts[1].format.empty(), ErrorCode::kInvalidModel, "QConv weights must not be packed");
    wshape_ = w->shape;
    M_ = wshape_[0];
    group_ = init.attrs.get_int("group", 1);
    auto ks = init.attrs.get_ints("kernel_shape", {});
    MOPT_CHECK(ks.empty() || (ks.size() == 2 && ks[0] == wshape_[2] && ks[1] == wshape_[3]), ErrorCode::kInvalidModel,
               "kernel_shape disagrees with W ", shape_str(wshape_));
    win_ = read_window(init.attrs, wshape_[2], wshape_[3], "QConv");
    depthwise_ = group_ > 1 && wshape_[1] == 1 && group_ == M_;
    // other groups: one GEMM per group, on its slice of the input channels (4 or more of them)
    MOPT_CHECK(group_ >= 1 && M_ % group_ == 0 && (group_ == 1 || depthwise_ || wshape_[1] >= 4), ErrorCode::kUnsupported,
               "QConv runs group=1, depthwise, and grouped convolutions of 4+ input channels per group (group ",
               group_, ", W ", shape_str(wshape_), ")");
    q_ = read_qattrs(init.attrs, M_, true);
    out_u8_ = init.out_dtypes[0] == DType::kU8;
    MOPT_CHECK(out_u8_ || init.out_dtypes[0] == DType::kF32, ErrorCode::kInvalidModel, "QConv output must be uint8 or float");
    const Tensor* b = init.const_input(2);
    if (b) MOPT_CHECK(b->dtype == DType::kF32 && b->numel() == M_, ErrorCode::kInvalidModel,
                      "QConv bias must be a constant float [", M_, "]");
    const int8_t* wp = w->ptr<int8_t>();
    const int64_t C = wshape_[1], KH = wshape_[2], KW = wshape_[3];
    std::vector<int64_t> wsum(static_cast<size_t>(M_), 0);
    for (int64_t m = 0; m < M_; ++m)
      for (int64_t k = 0; k < C * KH * KW; ++k) wsum[m] += wp[m * C * KH * KW + k];
    // the depthwise loop subtracts the zero point from its input copy: no weight-sum correction
    if (depthwise_) std::fill(wsum.begin(), wsum.end(), 0);
    make_requant(q_, q_.x_scale, q_.x_zp, b ? b->ptr<float>() : nullptr, wsum, out_u8_, 0, &rq_);
    // input 3: a float residual added before the activation (float output, GEMM path only)
    residual_ = init.in_dtypes.size() > 3 && init.in_dtypes[3] != DType::kUndefined;
    if (residual_) {
      MOPT_CHECK(!out_u8_ && !depthwise_ && init.in_dtypes[3] == DType::kF32, ErrorCode::kInvalidModel,
                 "QConv takes a float residual only with a float output and group=1");
      act_lo_ = rq_.ep.flo;
      act_hi_ = rq_.ep.fhi;
      rq_.ep.flo = -3.4e38f;
      rq_.ep.fhi = 3.4e38f;
    }
    // global_mean: the float output averaged over its H x W (a fused ReduceMean / GlobalAveragePool;
    // `keepdims` keeps [N, M, 1, 1], else [N, M]): each image's output is computed into a per-thread
    // buffer and reduced while in cache, so the full-size float output never reaches memory
    mean_ = init.attrs.get_int("global_mean", 0) != 0;
    keepdims_ = init.attrs.get_int("keepdims", 1) != 0;
    MOPT_CHECK(!mean_ || (!out_u8_ && group_ == 1 && !residual_), ErrorCode::kUnsupported,
               "QConv averages its output (global_mean) only with a float output, group=1 and no residual");
    // max_pool_2x2: a 2x2 stride-2 MaxPool of the uint8 output fused (floor: an odd last row or
    // column is dropped); pooled in the GEMM's registers before the requantization (which is
    // monotonic), so neither the full-size output nor a separate pass over it exists
    pool_ = init.attrs.get_int("max_pool_2x2", 0) != 0;
    MOPT_CHECK(!pool_ || (out_u8_ && !depthwise_ && !mean_ && !residual_), ErrorCode::kUnsupported,
               "QConv pools its output (max_pool_2x2) only with a uint8 output, no residual, no global_mean, "
               "and not depthwise");
    rq_.ep.pool = pool_ ? 1 : 0;
    if (depthwise_) {
      dw_ = init.fn<cpu::QDwConvFn>("qdwconv_u8", &impl);
      w_dw_.assign(wp, wp + M_ * KH * KW);
      impl = "depthwise:" + impl;
      return;
    }
    uk_ = qgemm_row(init, "qgemm_s8u8", &impl);
    copy_rows_ = init.fn<cpu::CopyRowsF32Fn>("copy_rows_f32", nullptr);
    // fewer than 4 channels (an RGB or grey image): K runs over (ky, kx, c) unpadded and the
    // panels are gathered byte by byte; else channels are padded to 4 and gathered as int32
    bytewise_ = C < 4;
    Cp_ = bytewise_ ? C : cdiv(C, 4) * 4;
    // row chunks (fewer than 4 channels, no column dilation, and not the one-channel stride-1
    // case, whose byte interleave runs 16 pixels at a time): K runs over (ky, then the window row's
    // KW x C bytes, zero-padded to a multiple of 4), so each 4-byte group is one 4-byte load from
    // the NHWC copy (an RGB 7x7 stride-2 stem: 42 loads per pixel instead of 148 byte moves)
    rowchunk_ = bytewise_ && !(C == 1 && win_.SW == 1) && win_.DW == 1;
    RC_ = cdiv(KW * C, 4) * 4;
    // reorder to [M][KH][KW][Cp] (channels innermost, zero-padded), or [M][KH][RC] for row
    // chunks, then pack as MR-row panels
    const int64_t Kp = rowchunk_ ? KH * RC_ : KH * KW * Cp_;
    std::vector<int8_t> re(static_cast<size_t>(M_ * Kp), 0);
    for (int64_t m = 0; m < M_; ++m)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < KH; ++ky)
          for (int64_t kx = 0; kx < KW; ++kx)
            re[m * Kp + (rowchunk_ ? ky * RC_ + kx * C : (ky * KW + kx) * Cp_) + c] = wp[((m * C + c) * KH + ky) * KW + kx];
    // each group's M / group rows packed on their own (a group's panels never mix two groups)
    const int64_t Mg = M_ / group_;
    for (int64_t gi = 0; gi < group_; ++gi) {
      std::vector<int8_t> part = pack_rows_s8(re.data() + gi * Mg * Kp, Mg, Kp, Kp, 1, uk_->mr);
      w_group_bytes_ = static_cast<int64_t>(part.size());
      w_packed_.insert(w_packed_.end(), part.begin(), part.end());
    }
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kU8, "QConv input must be uint8, got ", dtype_name(x.dtype));
    MOPT_ENSURE(x.rank() == 4, "QConv input must be NCHW, got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    MOPT_ENSURE(C == wshape_[1] * group_, "X has ", C, " channels; W ", shape_str(wshape_), " with group ", group_,
                " expects ", wshape_[1] * group_);
    const Window2D& g = win_;
    int64_t OH = 0, OW = 0, PT = 0, PL = 0;
    out_dim(g.auto_pad, H, g.KH, g.SH, g.DH, g.PT, g.PB, &OH, &PT);
    out_dim(g.auto_pad, W, g.KW, g.SW, g.DW, g.PL, g.PR, &OW, &PL);
    const int64_t PH = OH / 2, PW = OW / 2;  // (max_pool_2x2) the pooled output
    Tensor& y = mean_ ? (keepdims_ ? ctx.output(0, {N, M_, 1, 1}) : ctx.output(0, {N, M_}))
                      : pool_ ? ctx.output(0, {N, M_, PH, PW}) : ctx.output(0, {N, M_, OH, OW});
    if (y.numel() == 0) return;
    const int64_t Hp = std::max(H + PT, (OH - 1) * g.SH + (g.KH - 1) * g.DH + 1);
    const int64_t Wp = std::max(W + PL, (OW - 1) * g.SW + (g.KW - 1) * g.DW + 1);
    const uint8_t* xp = x.ptr<uint8_t>();
    const size_t esz = out_u8_ ? 1 : 4;
    char* yp = static_cast<char*>(y.data);
    ThreadPool& pool = ctx.pool();
    const int threads = pool.num_threads();
    const int64_t OHW = OH * OW;

    if (depthwise_) {
      const int64_t Wp_ = Wp;
      const int64_t slack = g.KW * g.DW + 64;  // the flat loops read past the last row
      const int64_t Wp = g.SW == 2 ? (Wp_ + 1) / 2 * 2 : Wp_;  // an even row for stride 2
      // stride 2: four phase planes (even/odd rows x even/odd columns), each 64-byte aligned
      const int64_t phase = g.SH == 2 && g.SW == 2 ? ((Hp + 1) / 2 * (Wp / 2) + 15) / 16 * 16 : 0;
      const int64_t pad_floats = (phase ? 4 * phase : Hp * Wp) + slack;
      const size_t plane = (static_cast<size_t>(pad_floats) * sizeof(float) + 63) / 64 * 64;
      const size_t accs = (static_cast<size_t>(OH * Wp + OW + 64) * 4 + 63) / 64 * 64;
      const size_t per = plane + 2 * accs;
      char* scratch = static_cast<char*>(ctx.scratch(per * threads));
      const int zx = q_.x_zp;
      const int64_t total = N * C, chunk = std::max<int64_t>(1, cdiv(total, 4 * threads));
      pool.run_tasks(cdiv(total, chunk), [&](int64_t task, int thread) {
       float* pad = reinterpret_cast<float*>(scratch + per * thread);
       // the padding and slack zeroed once per task: the kernel rewrites only the interior
       std::fill(pad, pad + pad_floats, 0.0f);
       // the arguments set once per task, then per plane only what moves (building the whole
       // struct, and t % C, cost a third of a 7 x 7 plane)
       cpu::QDwArgs a{pad, Wp, nullptr, g.KH, g.KW, OH, OW, g.SH, g.SW, g.DH, g.DW, nullptr, 0,
                      reinterpret_cast<float*>(scratch + per * thread + plane),
                      reinterpret_cast<int32_t*>(scratch + per * thread + plane + accs)};
       a.H = H;
       a.W = W;
       a.PT = PT;
       a.PL = PL;
       a.zx = zx;
       a.phase = phase;
       const int64_t t0 = task * chunk, t1 = std::min(total, t0 + chunk), taps = g.KH * g.KW;
       int64_t c = t0 % C;
       for (int64_t t = t0; t < t1; ++t, c = c + 1 == C ? 0 : c + 1) {
        a.w = w_dw_.data() + c * taps;
        a.y = yp + static_cast<size_t>(t * OHW) * esz;
        a.channel = c;
        a.src = xp + t * H * W;  // widened into the plane by the kernel
        dw_(a, rq_.ep);
       }
      });
      return;
    }

    // Panels [K4][NR][4] of the image seen through im2col, K in (ky, kx, channel) order.
    //  - planes (4+ channels): from zero-point-padded NCHW planes (the input itself for an unpadded
    //    1x1 stride-1 conv); one 4-byte group is the same pixel of 4 consecutive planes, so a run
    //    of pixels on one output row is an interleave of 4 contiguous rows
    //  - bytewise (< 4 channels): from an NHWC copy, gathered byte by byte
    const int64_t Cp = Cp_;
    const int64_t G = group_, Cg = C / G, Mg = M_ / G;  // Cg = wshape_[1]
    const int MR = uk_->mr, NR = uk_->nr;
    const int64_t K4 = rowchunk_ ? g.KH * RC_ / 4 : cdiv(g.KH * g.KW * Cp, 4);
    const bool direct = !bytewise_ && g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && PT == 0 && PL == 0 &&
                        OH == H && OW == W;
    const int64_t Hs = direct ? H : Hp, Ws = direct ? W : Wp;  // the source planes' size
    const int64_t img = bytewise_ ? Hp * Wp * Cp : C * Hs * Ws;
    // with images enough for every thread, one task per image (it pads its own planes): one
    // parallel region per call instead of two, and each image's planes stay in this core's cache
    const bool per_image = !bytewise_ && N >= 2 * threads;
    const size_t plane_bytes = (static_cast<size_t>(img) + 63) / 64 * 64;
    // (+ 64: row chunks read up to 3 bytes past the last window row)
    const size_t xbytes = direct ? 0 : per_image ? plane_bytes * threads : (static_cast<size_t>(N * img) + 63) / 64 * 64 + 64;
    // planes path: each image also as 4-channel groups, [Cp/4][Hs][Ws][4], so that a panel row
    // (one (ky, kx, channel group), a run of pixels) is one copy of 4-byte units
    const size_t img4 = bytewise_ ? 0 : static_cast<size_t>(Cp * Hs * Ws);
    const size_t g4_bytes = (img4 + 63) / 64 * 64;
    const size_t x4bytes = bytewise_ ? 0 : per_image ? g4_bytes * threads : g4_bytes * static_cast<size_t>(N * G);
    // the offset of each 4-byte group (planes) or of each k (bytewise, 4 per group) from a window's corner
    const size_t koff_bytes = (static_cast<size_t>(bytewise_ ? 4 * K4 : K4) * sizeof(int64_t) + 63) / 64 * 64;
    const size_t per = static_cast<size_t>(K4 * NR * 4 + 64);
    // with global_mean, each image's float output goes to a buffer (one per thread when tasks are
    // whole images, else one per image) and is averaged once the image is done
    const bool image_tasks = per_image || (bytewise_ && N >= 2 * threads);
    const size_t out_img = mean_ ? (static_cast<size_t>(M_ * OHW) * 4 + 63) / 64 * 64 : 0;
    const size_t out_bytes = out_img * static_cast<size_t>(image_tasks ? threads : N);
    uint8_t* xpad = static_cast<uint8_t*>(ctx.scratch(xbytes + x4bytes + koff_bytes + per * threads + out_bytes));
    uint8_t* x4 = xpad + xbytes;
    int64_t* koffs = reinterpret_cast<int64_t*>(x4 + x4bytes);
    uint8_t* bscratch = x4 + x4bytes + koff_bytes;
    char* outs = reinterpret_cast<char*>(bscratch + per * threads);
    const int64_t YHW = pool_ ? PH * PW : OHW;  // one output plane
    auto out_base = [&](int64_t n, int thread) -> char* {
      if (mean_) return outs + out_img * static_cast<size_t>(image_tasks ? thread : n);
      return yp + static_cast<size_t>(n * M_ * YHW) * esz;
    };
    auto mean_image = [&](int64_t n, const char* buf) {
      const float* o = reinterpret_cast<const float*>(buf);
      float* ym = y.ptr<float>() + n * M_;
      const int64_t hw = OHW;
      const float inv = 1.0f / static_cast<float>(hw);
      for (int64_t m = 0; m < M_; ++m) {
        const float* r = o + m * hw;
        float part[8] = {};  // 8 independent sums (one vector), not one serial chain of adds
        int64_t i = 0;
        for (; i + 8 <= hw; i += 8)
          for (int j = 0; j < 8; ++j) part[j] += r[i + j];
        float s = 0.0f;
        for (; i < hw; ++i) s += r[i];
        for (int j = 0; j < 8; ++j) s += part[j];
        ym[m] = s * inv;
      }
    };
    if (!bytewise_) {  // group k4 = (ky, kx, c4): its offset in 4-byte units from a window's corner
      int64_t k4 = 0;
      for (int64_t ky = 0; ky < g.KH; ++ky)
        for (int64_t kx = 0; kx < g.KW; ++kx)
          for (int64_t c4 = 0; c4 < Cp / 4; ++c4) koffs[k4++] = (c4 * Hs + ky * g.DH) * Ws + kx * g.DW;
    } else if (rowchunk_) {  // group (ky, q): bytes 4q.. of the window's row ky, in the NHWC copy
      for (int64_t k4 = 0; k4 < K4; ++k4) koffs[k4] = (k4 / (RC_ / 4)) * g.DH * Wp * Cp + 4 * (k4 % (RC_ / 4));
    } else {  // k = (ky, kx, c), in bytes of the NHWC copy; k past K reads the last one (its weight is 0)
      const int64_t K = g.KH * g.KW * Cp;
      for (int64_t k = 0; k < 4 * K4; ++k) {
        const int64_t kk = std::min(k, K - 1), c = kk % Cp, t = kk / Cp;
        koffs[k] = ((t / g.KW) * g.DH * Wp + (t % g.KW) * g.DW) * Cp + c;
      }
    }
    const uint8_t zx = static_cast<uint8_t>(q_.x_zp);
    const int64_t C_in = C, H_in = H, W_in = W, Hp_in = Hp, Wp_in = Wp, Cp_in = Cp, PT_in = PT, PL_in = PL;
    const uint8_t* xp_in = xp;
    uint8_t* xpad_in = xpad;
    if (bytewise_) {
      pool.parallel_for(N * Hp, 4, [&](int64_t r0, int64_t r1) {
        // locals: a uint8_t store may alias anything, so captured values would be reloaded per element
        const int64_t C = C_in, H = H_in, W = W_in, Hp = Hp_in, Wp = Wp_in, Cp = Cp_in, PT = PT_in, PL = PL_in;
        const uint8_t* xp = xp_in;
        uint8_t* xpad = xpad_in;
        const int64_t HW = H * W;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t n = r / Hp, iy = r % Hp - PT;
          uint8_t* d = xpad + r * Wp * Cp;
          std::memset(d, zx, static_cast<size_t>(Wp * Cp));
          if (iy < 0 || iy >= H) continue;
          const uint8_t* s = xp + n * C * HW + iy * W;
          if (C == 1) {  // one channel: NHWC is the plane itself
            std::memcpy(d + PL, s, static_cast<size_t>(W));
            continue;
          }
          for (int64_t ix = 0; ix < W; ++ix) {
            uint8_t* o = d + (PL + ix) * Cp;
            for (int64_t c = 0; c < C; ++c) o[c] = s[c * HW + ix];
          }
        }
      });
    }
    // zero-point-padded planes p0..p1 (image-major) into dst
    auto pad_planes = [&](int64_t p0, int64_t p1, uint8_t* dst) {
      const int64_t H = H_in, W = W_in, Hp = Hp_in, Wp = Wp_in, PT = PT_in, PL = PL_in;
      for (int64_t p = p0; p < p1; ++p) {
        uint8_t* d = dst + (p - p0) * Hp * Wp;
        std::memset(d, zx, static_cast<size_t>(Hp * Wp));
        for (int64_t iy = 0; iy < H; ++iy)
          std::memcpy(d + (iy + PT) * Wp + PL, xp_in + (p * H + iy) * W, static_cast<size_t>(W));
      }
    };
    // one image's planes [C][Hs][Ws] as groups [Cp/4][Hs][Ws][4] (a group's missing channels read
    // channel 0: their weights are 0)
    const int64_t plane_hw = Hs * Ws;
    auto group4 = [&](const uint8_t* planes, int64_t gi, uint8_t* dst) {  // group gi's channels
      for (int64_t c4 = 0; c4 < Cp / 4; ++c4) {
        const uint8_t* pl[4];
        for (int q = 0; q < 4; ++q) pl[q] = planes + (gi * Cg + (4 * c4 + q < Cg ? 4 * c4 + q : 0)) * plane_hw;
        interleave4(pl, 0, 1, static_cast<int>(plane_hw), dst + c4 * plane_hw * 4);
      }
    };
    if (!bytewise_ && !direct && !per_image)
      pool.parallel_for(N * C, 4, [&](int64_t p0, int64_t p1) { pad_planes(p0, p1, xpad_in + p0 * Hp * Wp); });
    const uint8_t* src_all = direct ? xp : xpad;
    if (!bytewise_ && !per_image)
      pool.parallel_for(N, 1, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n)
          for (int64_t gi = 0; gi < G; ++gi) group4(src_all + n * C * plane_hw, gi, x4 + (n * G + gi) * g4_bytes);
      });
    // per (image, pixel panel): pack its panel, then run every channel panel over it. Pooled, a
    // panel is NR / 4 outputs of one pooled row: the NR / 2 pixels under them on each of the two
    // image rows
    const int64_t PB = NR / 4, pblocks = cdiv(PW, PB);
    const int64_t npanels = pool_ ? PH * pblocks : cdiv(OHW, NR), mpanels = cdiv(Mg, MR);
    const float* rp = nullptr;
    if (residual_) {
      const Tensor& r = ctx.in(3);
      MOPT_ENSURE(r.dtype == DType::kF32 && r.shape == y.shape, "QConv residual has shape ", shape_str(r.shape),
                  ", expected ", shape_str(y.shape));
      rp = r.ptr<float>();
    }
    auto panel_task = [&](int64_t n, int64_t gi, int64_t jp, int thread, const uint8_t* planes) {
      uint8_t* panel = bscratch + per * thread;
      // the panel's pixels as runs on one output row
      struct Run {
        int64_t at, len, oy, ox;  // panel column, length, output row and column
      } run[65];
      int nrun = 0;
      int64_t j0 = 0, ycol = 0;  // the first pixel (unpooled), the first output's offset in its plane
      int cols = 0;              // outputs the micro-kernel stores per row
      if (pool_) {
        const int64_t pr = jp / pblocks, pc0 = jp % pblocks * PB;
        cols = static_cast<int>(std::min(PB, PW - pc0));
        for (int h = 0; h < 2; ++h) run[nrun++] = Run{h * NR / 2, 2 * cols, 2 * pr + h, 2 * pc0};
        ycol = pr * PW + pc0;
      } else {
        j0 = jp * NR;
        cols = static_cast<int>(std::min<int64_t>(NR, OHW - j0));
        for (int j = 0; j < cols;) {
          const int64_t p = j0 + j, oy = p / OW, ox = p % OW;
          const int len = static_cast<int>(std::min<int64_t>(cols - j, OW - ox));
          run[nrun++] = Run{j, len, oy, ox};
          j += len;
        }
        ycol = j0;
      }
      // the panel columns no run fills (their products are computed and dropped) are zeroed
      int64_t filled = 0;
      for (int r = 0; r < nrun; ++r) filled += run[r].len;
      auto zero_gaps = [&](uint8_t* d) {
        if (filled == NR) return;
        int64_t at = 0;
        for (int r = 0; r < nrun; ++r) {
          if (run[r].at > at) std::memset(d + at * 4, 0, static_cast<size_t>((run[r].at - at) * 4));
          at = run[r].at + run[r].len;
        }
        if (at < NR) std::memset(d + at * 4, 0, static_cast<size_t>((NR - at) * 4));
      };
      if (bytewise_) {
        // K over (ky, kx, c) of the NHWC copy, four consecutive k to a 4-byte group: each k is
        // the image at a fixed offset, so a group is an interleave of 4 shifted views of it (one
        // channel, stride 1: 16 pixels at a time). k past K reads any pixel: its weight is 0.
        const uint8_t* xi = xpad + n * img;
        if (rowchunk_) {
          // (a window row's last group reads up to 3 bytes past it: weight 0, and the copy has slack)
          const int64_t step = g.SW * Cp;
          for (int64_t k4 = 0; k4 < K4; ++k4) {
            uint8_t* d = panel + k4 * NR * 4;
            for (int r = 0; r < nrun; ++r) {
              const uint8_t* src = xi + (run[r].oy * g.SH * Wp + run[r].ox * g.SW) * Cp + koffs[k4];
              uint8_t* dr = d + run[r].at * 4;
              for (int64_t j = 0; j < run[r].len; ++j) std::memcpy(dr + 4 * j, src + j * step, 4);
            }
            zero_gaps(d);
          }
        } else {
          for (int64_t k4 = 0; k4 < K4; ++k4) {
            uint8_t* d = panel + k4 * NR * 4;
            const uint8_t* pl[4];
            for (int q = 0; q < 4; ++q) pl[q] = xi + koffs[4 * k4 + q];
            for (int r = 0; r < nrun; ++r)
              interleave4(pl, (run[r].oy * g.SH * Wp + run[r].ox * g.SW) * Cp, g.SW * Cp, static_cast<int>(run[r].len),
                          d + run[r].at * 4);
            zero_gaps(d);
          }
        }
      } else {
        // each run is, for every group k4, one copy of 4-byte units (strided by SW) from the
        // grouped image
        const float* xi = reinterpret_cast<const float*>(planes);  // 4-byte units, copied bit for bit
        float* pf = reinterpret_cast<float*>(panel);
        for (int r = 0; r < nrun; ++r)
          copy_rows_(xi + run[r].oy * g.SH * Ws + run[r].ox * g.SW, koffs, K4, run[r].len, g.SW, pf + run[r].at, NR);
        for (int64_t k4 = 0; k4 < K4; ++k4) zero_gaps(panel + k4 * NR * 4);
      }
      for (int64_t ip = 0; ip < mpanels; ++ip) {
        const int64_t i0 = gi * Mg + ip * MR;  // the output channel of the panel's first row
        const int rows = static_cast<int>(std::min<int64_t>(MR, (gi + 1) * Mg - i0));
        char* c = out_base(n, thread) + static_cast<size_t>(i0 * YHW + ycol) * esz;
        uk_->fn(K4, w_packed_.data() + gi * w_group_bytes_ + ip * K4 * MR * 4, panel, c, YHW, rows, cols, i0, j0, rq_.ep);
      }
      if (rp) {
        const float lo = act_lo_, hi = act_hi_;
        for (int64_t m = gi * Mg; m < (gi + 1) * Mg; ++m) {
          float* yr = reinterpret_cast<float*>(yp) + (n * M_ + m) * OHW + j0;
          const float* rr = rp + (n * M_ + m) * OHW + j0;
          for (int j = 0; j < cols; ++j) yr[j] = std::min(std::max(yr[j] + rr[j], lo), hi);
        }
      }
    };
    if (per_image) {
      pool.run_tasks(N, [&](int64_t n, int thread) {
        const uint8_t* planes = src_all + n * C * Hs * Ws;
        if (!direct) {
          uint8_t* own = xpad + plane_bytes * thread;
          pad_planes(n * C, (n + 1) * C, own);
          planes = own;
        }
        uint8_t* grouped = x4 + g4_bytes * thread;
        for (int64_t gi = 0; gi < G; ++gi) {
          group4(planes, gi, grouped);
          for (int64_t jp = 0; jp < npanels; ++jp) panel_task(n, gi, jp, thread, grouped);
        }
        if (mean_) mean_image(n, out_base(n, thread));
      });
    } else if (image_tasks) {  // bytewise, whole images per task: panels are small (K4 = 3 for 1 channel)
      pool.run_tasks(N, [&](int64_t n, int thread) {
        for (int64_t jp = 0; jp < npanels; ++jp) panel_task(n, 0, jp, thread, nullptr);
        if (mean_) mean_image(n, out_base(n, thread));
      });
    } else {
      pool.run_tasks(N * G * npanels, [&](int64_t t, int thread) {
        const int64_t n = t / (G * npanels), gi = t / npanels % G;
        panel_task(n, gi, t % npanels, thread, bytewise_ ? nullptr : x4 + (n * G + gi) * g4_bytes);
      });
      if (mean_)
        pool.parallel_for(N, 1, [&](int64_t n0, int64_t n1) {
          for (int64_t n = n0; n < n1; ++n) mean_image(n, out_base(n, 0));
        });
    }
  }

 private:
  Attrs attrs_;
  Shape wshape_;
  int64_t M_ = 0, group_ = 1, Cp_ = 0;
  Window2D win_;
  bool depthwise_ = false, out_u8_ = true, bytewise_ = false, residual_ = false, mean_ = false, keepdims_ = true;
  bool pool_ = false, rowchunk_ = false;
  int64_t RC_ = 0;  // (row chunks) a window row's bytes, padded to a multiple of 4
  float act_lo_ = -3.4e38f, act_hi_ = 3.4e38f;
  QAttrs q_;
  Requant rq_;
  const cpu::QGemmUkernel* uk_ = nullptr;
  std::vector<int8_t> w_packed_, w_dw_;
  int64_t w_group_bytes_ = 0;  // one group's packed panels in w_packed_
  cpu::QDwConvFn dw_ = nullptr;
  cpu::CopyRowsF32Fn copy_rows_ = nullptr;  // panel rows from the grouped image (4-byte units)
};

// ---- QMatMul ----------------------------------------------------------------------------------
class QMatMulKernel final : public Kernel {
 public:
  explicit QMatMulKernel(const KernelInit& init) {
    const Tensor* w = init.const_input(1);
    MOPT_CHECK(w && w->dtype == DType::kI8 && w->rank() == 2, ErrorCode::kInvalidModel,
               "QMatMul needs constant int8 weights [K, N]");
    K_ = w->shape[0];
    N_ = w->shape[1];
    dynamic_ = init.attrs.get_int("dynamic", 0) != 0;
    q_ = read_qattrs(init.attrs, N_, !dynamic_);
    out_u8_ = init.out_dtypes[0] == DType::kU8;
    MOPT_CHECK(!(dynamic_ && out_u8_), ErrorCode::kInvalidModel, "a dynamic QMatMul has a float output");
    MOPT_CHECK(out_u8_ || init.out_dtypes[0] == DType::kF32, ErrorCode::kInvalidModel, "QMatMul output must be uint8 or float");
    const Tensor* b = init.const_input(2);
    if (b) {
      MOPT_CHECK(b->dtype == DType::kF32 && b->numel() == N_, ErrorCode::kInvalidModel,
                 "QMatMul bias must be a constant float [", N_, "]");
      bias_.assign(b->ptr<float>(), b->ptr<float>() + N_);
    }
    uk_ = qgemm_row(init, "qgemm_u8s8", &impl);
    if (dynamic_) impl = "dynamic:" + impl;
    const int8_t* wp = w->ptr<int8_t>();
    wsum_.assign(static_cast<size_t>(N_), 0);
    for (int64_t k = 0; k < K_; ++k)
      for (int64_t n = 0; n < N_; ++n) wsum_[n] += wp[k * N_ + n];
    w_packed_ = pack_rows_s8(wp, N_, K_, 1, N_, uk_->nr);  // columns of W as NR-wide panels
    if (!dynamic_) make_requant(q_, q_.x_scale, q_.x_zp, bias_.empty() ? nullptr : bias_.data(), wsum_, out_u8_, 1, &rq_);
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1 && x.shape.back() == K_, "QMatMul input ", shape_str(x.shape), " does not end in K=", K_);
    MOPT_ENSURE(x.dtype == (dynamic_ ? DType::kF32 : DType::kU8), "QMatMul input must be ",
                dynamic_ ? "float32 (dynamic)" : "uint8", ", got ", dtype_name(x.dtype));
    Shape ys = x.shape;
    ys.back() = N_;
    Tensor& y = ctx.output(0, ys);
    const int64_t rows = x.numel() / std::max<int64_t>(K_, 1);
    if (y.numel() == 0) return;
    ThreadPool& pool = ctx.pool();
    const int threads = pool.num_threads();
    const int MR = uk_->mr, NR = uk_->nr;
    const int64_t K4 = cdiv(K_, 4);
    const size_t per = static_cast<size_t>(K4 * MR * 4 + 64);
    const size_t xq_bytes = dynamic_ ? (static_cast<size_t>(rows * K_) + 63) / 64 * 64 : 0;
    uint8_t* scratch = static_cast<uint8_t*>(ctx.scratch(xq_bytes + per * threads));
    const uint8_t* xq = x.dtype == DType::kU8 ? x.ptr<uint8_t>() : scratch;
    Requant local;
    const Requant* rq = &rq_;
    if (dynamic_) {  // asymmetric uint8 over this input's range (0 included, so 0.0 is exact)
      const float* xf = x.ptr<float>();
      const int64_t n = rows * K_;
      float lo = 0.f, hi = 0.f;
      for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, xf[i]);
        hi = std::max(hi, xf[i]);
      }
      MOPT_ENSURE(std::isfinite(lo) && std::isfinite(hi), "QMatMul (dynamic): the input holds inf or NaN");
      const double sx = hi > lo ? (static_cast<double>(hi) - lo) / 255.0 : 1.0;
      const int32_t zx = std::min(255, std::max(0, round_i32(-lo / sx)));
      const float inv = static_cast<float>(1.0 / sx);
      pool.parallel_for(n, 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const float v = std::min(std::max(xf[i] * inv, -static_cast<float>(zx)), 255.f - static_cast<float>(zx));
          scratch[i] = static_cast<uint8_t>(static_cast<int32_t>(round_even(v)) + zx);
        }
      });
      make_requant(q_, sx, zx, bias_.empty() ? nullptr : bias_.data(), wsum_, false, 1, &local);
      rq = &local;
    }
    const size_t esz = out_u8_ ? 1 : 4;
    char* yp = static_cast<char*>(y.data);
    const int64_t mpanels = cdiv(rows, MR), npanels = cdiv(N_, NR);
    // tasks: one row panel x a run of column panels (enough tasks for every thread)
    int64_t nblock = npanels;
    while (nblock > 1 && mpanels * cdiv(npanels, nblock) < 4 * threads) nblock = cdiv(nblock, 2);
    const int64_t nb = cdiv(npanels, nblock);
    pool.run_tasks(mpanels * nb, [&](int64_t t, int thread) {
      const int64_t ip = t / nb, jb = t % nb;
      const int64_t i0 = ip * MR;
      const int rws = static_cast<int>(std::min<int64_t>(MR, rows - i0));
      uint8_t* panel = scratch + xq_bytes + per * thread;
      // A panel [K4][MR][4]: whole 4-byte groups of each row, then the K tail and missing rows
      const int64_t K = K_, full = K / 4;
      for (int i = 0; i < MR; ++i) {
        int32_t* d = reinterpret_cast<int32_t*>(panel) + i;
        if (i >= rws) {
          for (int64_t k4 = 0; k4 < K4; ++k4) d[k4 * MR] = 0;
          continue;
        }
        const uint8_t* src = xq + (i0 + i) * K;
        for (int64_t k4 = 0; k4 < full; ++k4) std::memcpy(d + k4 * MR, src + 4 * k4, 4);
        if (full < K4) {
          uint8_t tail[4] = {0, 0, 0, 0};
          for (int64_t k = 4 * full; k < K; ++k) tail[k - 4 * full] = src[k];
          std::memcpy(d + full * MR, tail, 4);
        }
      }
      for (int64_t jp = jb * nblock; jp < std::min(npanels, (jb + 1) * nblock); ++jp) {
        const int64_t j0 = jp * NR;
        const int cls = static_cast<int>(std::min<int64_t>(NR, N_ - j0));
        uk_->fn(K4, panel, w_packed_.data() + jp * K4 * NR * 4, yp + static_cast<size_t>(i0 * N_ + j0) * esz, N_, rws,
                cls, i0, j0, rq->ep);
      }
    });
  }

 private:
  int64_t K_ = 0, N_ = 0;
  bool dynamic_ = false, out_u8_ = true;
  QAttrs q_;
  Requant rq_;
  std::vector<float> bias_;
  std::vector<int64_t> wsum_;
  const cpu::QGemmUkernel* uk_ = nullptr;
  std::vector<int8_t> w_packed_;
};

// ---- QMaxPool ---------------------------------------------------------------------------------
class QMaxPoolKernel final : public Kernel {
 public:
  explicit QMaxPoolKernel(const KernelInit& init) {
    auto ks = init.attrs.get_ints("kernel_shape", {});
    MOPT_CHECK(ks.size() == 2, ErrorCode::kInvalidModel, "QMaxPool needs a 2-D kernel_shape");
    win_ = read_window(init.attrs, ks[0], ks[1], "QMaxPool");
    ceil_ = init.attrs.get_int("ceil_mode", 0) != 0;
    impl = "qmaxpool_u8";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kU8 && x.rank() == 4, "QMaxPool input must be uint8 NCHW");
    const Window2D& g = win_;
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    int64_t OH = 0, OW = 0, PT = 0, PL = 0;
    out_dim(g.auto_pad, H, g.KH, g.SH, g.DH, g.PT, g.PB, &OH, &PT);
    out_dim(g.auto_pad, W, g.KW, g.SW, g.DW, g.PL, g.PR, &OW, &PL);
    if (ceil_ && g.auto_pad == "NOTSET") {
      // (as the float MaxPool: a window may not start inside the end padding)
      auto ceil_out = [](int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1) {
        const int64_t span = in + p0 + p1 - ((k - 1) * d + 1);
        int64_t o = span < 0 ? 0 : cdiv(span, s) + 1;
        if (o > 0 && (o - 1) * s >= in + p0) --o;
        return o;
      };
      OH = ceil_out(H, g.KH, g.SH, g.DH, g.PT, g.PB);
      OW = ceil_out(W, g.KW, g.SW, g.DW, g.PL, g.PR);
    }
    Tensor& y = ctx.output(0, {N, C, OH, OW});
    if (y.numel() == 0) return;
    const uint8_t* xp = x.ptr<uint8_t>();
    uint8_t* yp = y.ptr<uint8_t>();
    // every window inside the image (no padding reached): no bounds checks; 2x2/2 unrolled
    const bool inside = PT == 0 && PL == 0 && (OH - 1) * g.SH + (g.KH - 1) * g.DH < H && (OW - 1) * g.SW + (g.KW - 1) * g.DW < W;
    const bool two = inside && g.KH == 2 && g.KW == 2 && g.SH == 2 && g.SW == 2 && g.DH == 1 && g.DW == 1;
    // other windows with column stride 1 or 2 (and no column dilation): separably, each output
    // row as the max of its window's rows (a row of padded columns; padding reads 0, which no
    // max over a window with one pixel in the image can pick), then of each window's columns
    // (for stride 2 over the even and odd columns split apart): 16 bytes at a time
    const bool separable = !two && (g.SW == 1 || g.SW == 2) && g.DW == 1 && g.KH <= 64;
    if (separable) {
      run_separable(x, g, OH, OW, PT, PL, y, ctx);
      return;
    }
    ctx.pool().parallel_for(N * C, 8, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const uint8_t* s = xp + t * H * W;
        uint8_t* d = yp + t * OH * OW;
        if (two) {
          for (int64_t oy = 0; oy < OH; ++oy) {
            const uint8_t* r0 = s + 2 * oy * W;
            const uint8_t* r1 = r0 + W;
            uint8_t* o = d + oy * OW;
            int64_t ox = 0;
#if defined(__SSE2__)
            // 32 input columns -> 16 outputs: max of the two rows, then of each byte pair
            const __m128i lowb = _mm_set1_epi16(0x00FF);
            for (; ox + 16 <= OW; ox += 16) {
              const __m128i a = _mm_max_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 2 * ox)),
                                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1 + 2 * ox)));
              const __m128i b = _mm_max_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 2 * ox + 16)),
                                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1 + 2 * ox + 16)));
              const __m128i pa = _mm_max_epi16(_mm_and_si128(a, lowb), _mm_srli_epi16(a, 8));
              const __m128i pb = _mm_max_epi16(_mm_and_si128(b, lowb), _mm_srli_epi16(b, 8));
              _mm_storeu_si128(reinterpret_cast<__m128i*>(o + ox), _mm_packus_epi16(pa, pb));
            }
            for (; ox + 8 <= OW; ox += 8) {
              const __m128i a = _mm_max_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0 + 2 * ox)),
                                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1 + 2 * ox)));
              const __m128i pa = _mm_max_epi16(_mm_and_si128(a, lowb), _mm_srli_epi16(a, 8));
              _mm_storel_epi64(reinterpret_cast<__m128i*>(o + ox), _mm_packus_epi16(pa, pa));
            }
#endif
            for (; ox < OW; ++ox)
              o[ox] = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
          }
          continue;
        }
        if (inside) {
          for (int64_t oy = 0; oy < OH; ++oy)
            for (int64_t ox = 0; ox < OW; ++ox) {
              uint8_t m = 0;
              for (int64_t ky = 0; ky < g.KH; ++ky) {
                const uint8_t* r = s + (oy * g.SH + ky * g.DH) * W + ox * g.SW;
                for (int64_t kx = 0; kx < g.KW; ++kx) m = std::max(m, r[kx * g.DW]);
              }
              d[oy * OW + ox] = m;
            }
          continue;
        }
        for (int64_t oy = 0; oy < OH; ++oy)
          for (int64_t ox = 0; ox < OW; ++ox) {
            int m = 0;
            for (int64_t ky = 0; ky < g.KH; ++ky) {
              const int64_t iy = oy * g.SH - PT + ky * g.DH;
              if (iy < 0 || iy >= H) continue;
              for (int64_t kx = 0; kx < g.KW; ++kx) {
                const int64_t ix = ox * g.SW - PL + kx * g.DW;
                if (ix >= 0 && ix < W) m = std::max<int>(m, s[iy * W + ix]);
              }
            }
            d[oy * OW + ox] = static_cast<uint8_t>(m);
          }
      }
    });
  }

 private:
  void run_separable(const Tensor& x, const Window2D& g, int64_t OH, int64_t OW, int64_t PT, int64_t PL, Tensor& y,
                     KernelContext& ctx) const {
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    // padded row: columns [0, Wt) hold image columns [-PL, Wt - PL); 32 bytes of slack for the
    // 16-byte reads at the window's far end and the pairs of the stride-2 split
    const int64_t span = (OW - 1) * g.SW + g.KW;
    const int64_t Wt = (std::max(span, PL + W) + 15) / 16 * 16 + 32;
    const int64_t Wh = Wt / 2 + 32;  // each half of the split row
    const size_t per = static_cast<size_t>(Wt + 2 * Wh + 64);
    uint8_t* scratch = static_cast<uint8_t*>(ctx.scratch(per * static_cast<size_t>(T)));
    const uint8_t* xp = x.ptr<uint8_t>();
    uint8_t* yp = y.ptr<uint8_t>();
    const int64_t total = N * C, chunk = std::max<int64_t>(1, cdiv(total, 4 * T));
    pool.run_tasks(cdiv(total, chunk), [&](int64_t task, int thread) {
      uint8_t* row = scratch + per * static_cast<size_t>(thread);
      uint8_t* ev = row + Wt;
      uint8_t* od = ev + Wh;
      // (locals: a uint8_t store may alias anything, so captured values would be reloaded per byte)
      const int64_t KH = g.KH, KW = g.KW, SH = g.SH, SW = g.SW, DH = g.DH, H_ = H, W_ = W, OW_ = OW, PL_ = PL;
      std::memset(row, 0, static_cast<size_t>(per));  // the padding stays 0: every row rewrites only [PL, PL + W)
      for (int64_t t = task * chunk; t < std::min(total, (task + 1) * chunk); ++t) {
        const uint8_t* src = xp + t * H_ * W_;
        uint8_t* dst = yp + t * OH * OW_;
        for (int64_t oy = 0; oy < OH; ++oy) {
          const uint8_t* rows[64];  // (KH <= 64)
          int nr = 0;
          for (int64_t ky = 0; ky < KH; ++ky) {
            const int64_t iy = oy * SH - PT + ky * DH;
            if (iy >= 0 && iy < H_) rows[nr++] = src + iy * W_;
          }
          uint8_t* r = row + PL_;
          int64_t ix = 0;
#if defined(__SSE2__)
          for (; ix + 16 <= W_; ix += 16) {
            __m128i m = _mm_setzero_si128();
            for (int q = 0; q < nr; ++q) m = _mm_max_epu8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[q] + ix)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(r + ix), m);
          }
#endif
          for (; ix < W_; ++ix) {
            uint8_t m = 0;
            for (int q = 0; q < nr; ++q) m = std::max(m, rows[q][ix]);
            r[ix] = m;
          }
          uint8_t* o = dst + oy * OW_;
          // columns: output ox reads row[ox * SW + kx]; for stride 2 that is ev[ox + kx / 2] for
          // even kx and od[ox + kx / 2] for odd kx
          const uint8_t* base = row;
          if (SW == 2) {
            int64_t j = 0;
#if defined(__SSE2__)
            const __m128i lowb = _mm_set1_epi16(0x00FF);
            for (; 2 * j + 32 <= Wt; j += 16) {
              const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j));
              const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * j + 16));
              _mm_storeu_si128(reinterpret_cast<__m128i*>(ev + j),
                               _mm_packus_epi16(_mm_and_si128(a, lowb), _mm_and_si128(b, lowb)));
              _mm_storeu_si128(reinterpret_cast<__m128i*>(od + j), _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8)));
            }
#endif
            for (; 2 * j + 1 < Wt; ++j) {
              ev[j] = row[2 * j];
              od[j] = row[2 * j + 1];
            }
          }
          auto tap = [&](int64_t kx) -> const uint8_t* { return SW == 2 ? (kx % 2 ? od : ev) + kx / 2 : base + kx; };
          int64_t ox = 0;
#if defined(__SSE2__)
          for (; ox + 16 <= OW_; ox += 16) {
            __m128i m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(tap(0) + ox));
            for (int64_t kx = 1; kx < KW; ++kx) m = _mm_max_epu8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(tap(kx) + ox)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(o + ox), m);
          }
#endif
          for (; ox < OW_; ++ox) {
            uint8_t m = tap(0)[ox];
            for (int64_t kx = 1; kx < KW; ++kx) m = std::max(m, tap(kx)[ox]);
            o[ox] = m;
          }
        }
      }
    });
  }

  Window2D win_;
  bool ceil_ = false;
};

// ---- QuantizeLinear / DequantizeLinear --------------------------------------------------------
// Resolves the per-tensor or per-axis layout: element i uses scale[(i / inner) % axis_len].
struct AxisLayout {
  int64_t axis_len = 1, inner = 1;
};

AxisLayout axis_layout(const Tensor& x, const Tensor& scale, int64_t axis, const char* op) {
  AxisLayout l;
  if (scale.numel() == 1 && scale.rank() <= 1) return l;
  MOPT_ENSURE(scale.rank() == 1, op, ": scale must be a scalar or 1-D (blocked quantization is not supported)");
  if (axis < 0) axis += x.rank();
  MOPT_ENSURE(axis >= 0 && axis < x.rank(), op, ": axis out of range for input ", shape_str(x.shape));
  MOPT_ENSURE(scale.numel() == x.shape[axis], op, ": scale has ", scale.numel(), " values, axis ", axis, " of ",
              shape_str(x.shape), " has ", x.shape[axis]);
  l.axis_len = x.shape[axis];
  for (int64_t d = axis + 1; d < x.rank(); ++d) l.inner *= x.shape[d];
  return l;
}

class QuantizeLinearKernel final : public Kernel {
 public:
  explicit QuantizeLinearKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", 1);
    MOPT_CHECK(init.attrs.get_int("block_size", 0) == 0, ErrorCode::kUnsupported,
               "QuantizeLinear: blocked quantization (block_size) has no native kernel");
    out_ = init.out_dtypes[0];
    MOPT_CHECK(out_ == DType::kU8 || out_ == DType::kI8, ErrorCode::kUnsupported,
               "QuantizeLinear: only uint8 and int8 outputs have a native kernel, not ", dtype_name(out_));
    quant_ = init.fn<cpu::QuantizeF32Fn>("quantize_f32_8", &impl);  // (per tensor; per axis stays here)
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& s = ctx.in(1);
    const Tensor* z = ctx.input(2);
    MOPT_ENSURE(x.dtype == DType::kF32 && s.dtype == DType::kF32, "QuantizeLinear: x and y_scale must be float32");
    if (z) MOPT_ENSURE(z->dtype == out_ && z->numel() == s.numel(), "QuantizeLinear: y_zero_point must be ",
                       dtype_name(out_), " with as many values as y_scale");
    const AxisLayout l = axis_layout(x, s, axis_, "QuantizeLinear");
    Tensor& y = ctx.output(0, x.shape);
    const int64_t n = x.numel();
    const float* xp = x.ptr<float>();
    const float* sp = s.ptr<float>();
    const int lo = out_ == DType::kU8 ? 0 : -128, hi = out_ == DType::kU8 ? 255 : 127;
    if (l.axis_len == 1) {  // per tensor: one scale, a loop the compiler vectorizes
      const float sc = sp[0], zp = z ? static_cast<float>(scalar_as_double(*z, 0)) : 0.f;
      const float flo = static_cast<float>(lo) - zp, fhi = static_cast<float>(hi) - zp;
      uint8_t* yq = static_cast<uint8_t*>(y.data);  // (int8: the same low bytes)
      ctx.pool().parallel_for(n, 16384, [&](int64_t b, int64_t e) { quant_(xp + b, e - b, sc, zp, flo, fhi, yq + b); });
      return;
    }
    ctx.pool().parallel_for(n, 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t c = (i / l.inner) % l.axis_len;
        const int zp = z ? static_cast<int>(scalar_as_double(*z, c)) : 0;
        const float v = std::nearbyint(xp[i] / sp[c]) + static_cast<float>(zp);
        const int q = static_cast<int>(std::min(std::max(v, static_cast<float>(lo)), static_cast<float>(hi)));
        if (out_ == DType::kU8) y.ptr<uint8_t>()[i] = static_cast<uint8_t>(q);
        else y.ptr<int8_t>()[i] = static_cast<int8_t>(q);
      }
    });
  }

 private:
  int64_t axis_ = 1;
  DType out_ = DType::kU8;
  cpu::QuantizeF32Fn quant_ = nullptr;
};

class DequantizeLinearKernel final : public Kernel {
 public:
  explicit DequantizeLinearKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", 1);
    MOPT_CHECK(init.attrs.get_int("block_size", 0) == 0, ErrorCode::kUnsupported,
               "DequantizeLinear: blocked quantization (block_size) has no native kernel");
    impl = "dequantize_f32";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& s = ctx.in(1);
    const Tensor* z = ctx.input(2);
    MOPT_ENSURE(x.dtype == DType::kU8 || x.dtype == DType::kI8 || x.dtype == DType::kI32,
                "DequantizeLinear: x must be uint8, int8 or int32, got ", dtype_name(x.dtype));
    MOPT_ENSURE(s.dtype == DType::kF32, "DequantizeLinear: x_scale must be float32");
    if (z) MOPT_ENSURE(z->dtype == x.dtype && z->numel() == s.numel(), "DequantizeLinear: x_zero_point must be ",
                       dtype_name(x.dtype), " with as many values as x_scale");
    const AxisLayout l = axis_layout(x, s, axis_, "DequantizeLinear");
    Tensor& y = ctx.output(0, x.shape);
    const float* sp = s.ptr<float>();
    float* yp = y.ptr<float>();
    if (x.dtype != DType::kI32) {
      // 8-bit: x - zp is an exact small integer, so float arithmetic gives what the double path
      // below gives. Runs of `inner` elements share a channel: one loop each, which vectorizes.
      const int64_t inner = l.axis_len == 1 ? x.numel() : l.inner, axis_len = l.axis_len;
      const bool u8 = x.dtype == DType::kU8;
      const void* xv = x.data;
      const Tensor* zt = z;
      auto block = [&](int64_t c, int64_t b, int64_t e) {  // elements b..e of run c (channel c % axis_len)
        const int64_t ch = c % axis_len;
        const float zp = zt ? static_cast<float>(scalar_as_double(*zt, ch)) : 0.0f, sc = sp[ch];
        float* out = yp + c * inner;
        if (u8) {
          const uint8_t* in = static_cast<const uint8_t*>(xv) + c * inner;
          for (int64_t i = b; i < e; ++i) out[i] = (static_cast<float>(in[i]) - zp) * sc;
        } else {
          const int8_t* in = static_cast<const int8_t*>(xv) + c * inner;
          for (int64_t i = b; i < e; ++i) out[i] = (static_cast<float>(in[i]) - zp) * sc;
        }
      };
      const int64_t runs = inner == 0 ? 0 : x.numel() / inner;
      if (runs == 1) {
        ctx.pool().parallel_for(inner, 16384, [&](int64_t b, int64_t e) { block(0, b, e); });
      } else {
        ctx.pool().parallel_for(runs, std::max<int64_t>(1, 16384 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
          for (int64_t c = b; c < e; ++c) block(c, 0, inner);
        });
      }
      return;
    }
    ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t c = (i / l.inner) % l.axis_len;
        const double zp = z ? scalar_as_double(*z, c) : 0.0;
        const double v = scalar_as_double(x, i);
        yp[i] = static_cast<float>((v - zp)) * sp[c];
      }
    });
  }

 private:
  int64_t axis_ = 1;
};

template <class K>
std::unique_ptr<Kernel> make(const KernelInit& init) {
  return std::make_unique<K>(init);
}

}  // namespace

void register_quant_ops(OpRegistry& r) {
  r.add({"", "QuantizeLinear", {DType::kF32}, &make<QuantizeLinearKernel>, nullptr});
  r.add({"", "DequantizeLinear", {DType::kU8, DType::kI8, DType::kI32}, &make<DequantizeLinearKernel>, nullptr});
  r.add({"com.mopt", "QConv", {DType::kU8}, &make<QConvKernel>, nullptr});
  r.add({"com.mopt", "QMatMul", {DType::kU8, DType::kF32}, &make<QMatMulKernel>, nullptr});
  r.add({"com.mopt", "QMaxPool", {DType::kU8}, &make<QMaxPoolKernel>, nullptr});
}

}  // namespace mopt
