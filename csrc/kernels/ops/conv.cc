// Conv and com.mopt.FusedConv (bias, residual input and activation fused into the store), NCHW,
// 1-D and 2-D. Paths: depthwise (one input channel per group, multiplier 1) on the ISA's dwconv
// loop; everything else as a GEMM per (image, group): weights are the packed A operand,
// B is the image read through im2col while it is packed (1x1/stride-1 convs read it directly).
#include "kernels/gemm.h"
#include "kernels/ops/common.h"

namespace mopt {
namespace {

struct ConvGeom {
  int64_t KH = 1, KW = 1, SH = 1, SW = 1, DH = 1, DW = 1;
  int64_t PT = 0, PL = 0, PB = 0, PR = 0;
  std::string auto_pad = "NOTSET";
  int spatial = 2;  // 1 or 2
};

ConvGeom read_geom(const Attrs& a, const Shape& wshape) {
  ConvGeom g;
  MOPT_ENSURE(wshape.size() == 3 || wshape.size() == 4, "only 1-D and 2-D convolutions have a native kernel; W is ",
              shape_str(wshape));
  g.spatial = static_cast<int>(wshape.size()) - 2;
  std::vector<int64_t> ks = a.get_ints("kernel_shape", {});
  std::vector<int64_t> st = a.get_ints("strides", std::vector<int64_t>(g.spatial, 1));
  std::vector<int64_t> dl = a.get_ints("dilations", std::vector<int64_t>(g.spatial, 1));
  std::vector<int64_t> pd = a.get_ints("pads", std::vector<int64_t>(2 * g.spatial, 0));
  MOPT_ENSURE(st.size() == static_cast<size_t>(g.spatial) && dl.size() == static_cast<size_t>(g.spatial) &&
                  pd.size() == static_cast<size_t>(2 * g.spatial),
              "strides/dilations/pads do not match a ", g.spatial, "-D convolution");
  if (!ks.empty())
    for (int i = 0; i < g.spatial; ++i)
      MOPT_ENSURE(ks[i] == wshape[2 + i], "kernel_shape ", ks[i], " disagrees with W ", shape_str(wshape));
  for (int64_t v : st) MOPT_ENSURE(v >= 1, "strides must be >= 1");
  for (int64_t v : dl) MOPT_ENSURE(v >= 1, "dilations must be >= 1");
  for (int64_t v : pd) MOPT_ENSURE(v >= 0, "pads must be >= 0");
  g.auto_pad = a.get_string("auto_pad", "NOTSET");
  if (g.spatial == 2) {
    g.KH = wshape[2]; g.KW = wshape[3]; g.SH = st[0]; g.SW = st[1]; g.DH = dl[0]; g.DW = dl[1];
    g.PT = pd[0]; g.PL = pd[1]; g.PB = pd[2]; g.PR = pd[3];
  } else {
    g.KW = wshape[2]; g.SW = st[0]; g.DW = dl[0]; g.PL = pd[0]; g.PR = pd[1];
  }
  return g;
}

// Output size along one axis and the padding at its start, honouring auto_pad.
void out_dim(const std::string& auto_pad, int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1,
             int64_t* out, int64_t* pad0) {
  const int64_t ek = (k - 1) * d + 1;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    *out = (in + s - 1) / s;
    int64_t total = std::max<int64_t>(0, (*out - 1) * s + ek - in);
    *pad0 = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    return;
  }
  if (auto_pad == "VALID") p0 = p1 = 0;
  else MOPT_ENSURE(auto_pad == "NOTSET", "auto_pad '", auto_pad, "' is not valid");
  const int64_t span = in + p0 + p1 - ek;
  *out = span < 0 ? 0 : span / s + 1;
  *pad0 = p0;
}

// Elements of one output channel's filter: C/group x kernel window (defined when there are no outputs).
int64_t filter_size(const Shape& w) {
  int64_t k = 1;
  for (size_t i = 1; i < w.size(); ++i) k *= w[i];
  return k;
}

bool is_depthwise(const Shape& w, int64_t group) { return w[1] == 1 && w[0] == group && group > 1; }

// One input channel per group and several output channels from each (a channel multiplier, or a
// 1-channel image through many filters): the depthwise loop runs each input plane, padded once,
// into all its outputs. As a GEMM its K is only the kernel window, so it streams C and the im2col
// copy for a few FMAs per element (measured at 64 x [1 -> 32, 32x32, 3x3]: 30 GFLOP/s).
bool is_multiplier(const Shape& w, int64_t group) {
  return w[1] == 1 && w[0] % group == 0 && w[0] / group > 1;
}

// Which way round the GEMM goes. Normally C[channels x pixels] = W * im2col(X): channels are padded
// to the micro-kernel's MR rows and pixels to its NR columns. With few pixels (7x7 = 49 on a 32-wide
// tile fills 77%), pixels x channels = im2col(X)^T * W^T fills the tiles better: it is chosen when
// it wastes clearly less, and only for few pixels (measured: with hundreds of pixels or more, the
// narrower pixel panels and the transposed store cost more than the padding they save -- ResNet-50's
// early layers, and 32 channels over 32x32 pixels ran 5x slower transposed than 28 channels not).
// `pixels` is the output size the compiler saw (0: unknown).
bool pixels_as_rows(int64_t channels, int64_t pixels, int mr, int nr) {
  if (pixels <= 0 || channels <= 0) return false;
  if (pixels > 4 * nr) return false;
  auto fill = [](int64_t n, int64_t t) { return static_cast<double>(n) / static_cast<double>((n + t - 1) / t * t); };
  return fill(pixels, mr) * fill(channels, nr) > 1.08 * fill(channels, mr) * fill(pixels, nr);
}

// Non-overlapping patches (a vision transformer's patch embedding: 16x16 windows, stride 16, no
// padding): each pixel's window is KH runs of KW contiguous floats per channel, so the rows of
// im2col^T are plain copies, and the GEMM runs pixels x channels reading them in place. Through
// im2col as channels x pixels every element was a separate load 16 floats from the last (ViT's
// 224x224 embedding spent 40% of its time packing).
bool is_patchify(const ConvGeom& g, int64_t group) {
  return group == 1 && g.spatial == 2 && g.KH == g.SH && g.KW == g.SW && g.DH == 1 && g.DW == 1 && g.KW >= 4 &&
         g.PT == 0 && g.PL == 0 && g.PB == 0 && g.PR == 0 && (g.auto_pad == "NOTSET" || g.auto_pad == "VALID");
}

// The same from the attributes, for the weight packer: bad geometry is not a patch embedding (the
// kernel reports it, naming the node).
bool is_patchify(const Attrs& attrs, const Shape& wshape, int64_t group) {
  if (group != 1 || wshape.size() != 4) return false;
  try {
    return is_patchify(read_geom(attrs, wshape), group);
  } catch (const Error&) {
    return false;
  }
}

// The weight-dependent part of a convolution: fixed at load time for constant weights, derived
// per run when W is computed by the graph.
struct ConvLayout {
  Shape wshape;
  ConvGeom geom;
  int64_t Mg = 0, Kg = 0;
  bool depthwise = false;
  bool multiplier = false;  // see is_multiplier: the depthwise loop, mult = Mg
};

ConvLayout conv_layout(const Attrs& attrs, const Shape& wshape, int64_t group) {
  ConvLayout l;
  l.wshape = wshape;
  l.geom = read_geom(attrs, wshape);
  MOPT_ENSURE(wshape[0] % group == 0, "output channels ", wshape[0], " are not divisible by group ", group);
  l.Mg = wshape[0] / group;
  l.Kg = filter_size(wshape);
  l.depthwise = is_depthwise(wshape, group);
  l.multiplier = is_multiplier(wshape, group);
  return l;
}

// A row-major [M][K] matrix packed as a GEMM A operand in MR-row panels.
void pack_rows(const float* m, int64_t M, int64_t K, int mr, float* dst) {
  GemmA a;
  a.data = m;
  a.rs = K;
  a.cs = 1;
  GemmF32::pack_a(a, M, K, mr, dst);
}

// Packs plain weights [M][K] (groups of M/group rows) as the GEMM's A operand in MR-row panels, or,
// transposed, as its B operand (W^T) in NR-column panels. Returns the floats needed; dst may be null.
size_t pack_conv_weights(const float* w, int64_t M, int64_t K, int64_t group, bool transposed, int mr, int nr, float* dst) {
  const int64_t Mg = M / group;
  const size_t panel = transposed ? GemmF32::packed_b_floats(K, Mg, nr) : GemmF32::packed_a_floats(Mg, K, mr);
  if (dst) {
    for (int64_t g = 0; g < group; ++g) {
      if (transposed) {
        GemmB b;
        b.data = w + g * Mg * K;  // element (k, m) of W^T
        b.rs = 1;
        b.cs = K;
        GemmF32::pack_b(b, K, Mg, nr, dst + panel * g);
      } else {
        pack_rows(w + g * Mg * K, Mg, K, mr, dst + panel * g);
      }
    }
  }
  return panel * static_cast<size_t>(group);
}

// A depthwise call's geometry and activation (its planes, weights and scratch are set per call).
cpu::DwConvArgs dw_geometry(const ConvGeom& G, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t PT, int64_t PL,
                            const cpu::UnaryParams& act) {
  cpu::DwConvArgs a{};
  a.H = H; a.W = W; a.KH = G.KH; a.KW = G.KW; a.OH = OH; a.OW = OW;
  a.SH = G.SH; a.SW = G.SW; a.PH = PT; a.PW = PL; a.DH = G.DH; a.DW = G.DW;
  a.act = act;
  return a;
}

// Winograd F(4x4, 3x3) takes 3x3 / stride-1 / undilated 2-D convolutions of one group.
bool winograd_fits(const ConvLayout& l, int64_t group) {
  const ConvGeom& g = l.geom;
  return group == 1 && g.spatial == 2 && l.wshape.size() == 4 && g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1 &&
         g.DH == 1 && g.DW == 1;
}

// The Winograd filters: each 3x3 filter g becomes G g G^T (6x6, computed in double); position xi of
// all of them is the [M][C] matrix of GEMM xi, packed as its A operand (36 of packed_a_floats(M, C, mr)).
void winograd_weights(const float* w, int64_t M, int64_t C, int mr, float* dst) {
  static const double G[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  const size_t stride = GemmF32::packed_a_floats(M, C, mr);
  std::vector<float> u(static_cast<size_t>(M * C));  // one position's matrix at a time
  std::vector<double> t(static_cast<size_t>(M * C) * 36);
  for (int64_t k = 0; k < M * C; ++k) {
    const float* g = w + k * 9;
    double gg[6][3];  // G g
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 3; ++j) gg[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) t[k * 36 + i * 6 + j] = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
  }
  for (int xi = 0; xi < 36; ++xi) {
    for (int64_t k = 0; k < M * C; ++k) u[k] = static_cast<float>(t[k * 36 + xi]);
    pack_rows(u.data(), M, C, mr, dst + xi * stride);
  }
}

// Tiles per Winograd block (whole tile rows): its 36 transformed inputs and GEMM results stay in
// cache (128 and 512 measured the same as 256, within the noise).
constexpr int64_t kWinoBlockTiles = 256;
// Tiles per thread from which each thread takes whole blocks of its own (see run_winograd), and
// the tiles of such a block (its 36 transformed inputs and products stay in the thread's L2: 98
// tiles of 64 channels, 2.2 MB, made two threads slower than one).
constexpr int64_t kWinoMinTilesPerThread = 64;
constexpr int64_t kWinoOwnBlockTiles = 64;

// Depthwise planes narrower than this run a block of channels at a time, channels in the vector
// lanes; wider ones a plane at a time, columns in the lanes. AVX-512's plane kernel (aligned rows,
// shifted taps by alignr) is the faster one from 8 columns: 272 channels of 14x14, 2 threads, 49 us
// against 71 by blocks; 256 of 13x13, 49 against 57.
constexpr int64_t kDwBlockMaxWidth = 16;
constexpr int64_t kDwBlockMaxWidthAvx512 = 8;

class ConvKernel final : public Kernel {
 public:
  explicit ConvKernel(const KernelInit& init) : attrs_(init.attrs) {
    group_ = init.attrs.get_int("group", 1);
    MOPT_ENSURE(group_ >= 1, "group must be >= 1");
    act_ = activation_from_attrs(init.attrs);
    pool2_ = init.attrs.get_int("maxpool_2x2", 0) != 0;
    shuffle_ = init.attrs.get_int("shuffle_groups", 0);
    const Tensor* w = init.const_input(1);
    // (the channel shuffle is a stride between a GEMM's rows: one GEMM per group, nothing else stored)
    MOPT_CHECK(shuffle_ == 0 || (shuffle_ == group_ && group_ > 1 && w && w->rank() >= 3 && w->shape[1] > 1 && !pool2_ &&
                                 init.attrs.get_int("winograd", 0) == 0 &&
                                 (init.in_dtypes.size() <= 3 || init.in_dtypes[3] == DType::kUndefined)),
               ErrorCode::kInvalidModel, "shuffle_groups (", shuffle_, ") is fused only into a grouped convolution of as many ",
               "groups (", group_, ") with constant weights of several input channels per group, no residual and no pool");
    MOPT_CHECK(!w || w->dtype == DType::kF32, ErrorCode::kInvalidModel, "W must be float32 like X, got ",
               dtype_name(w->dtype));
    MOPT_CHECK(!pool2_ || (w && w->rank() == 4 && w->shape[1] == 1 && init.consts[1].format.empty()),
               ErrorCode::kInvalidModel,
               "maxpool_2x2 is fused only into a 2-D convolution with constant, unpacked weights and one input "
               "channel per group");
    if (!w) {  // weights computed at run time: both paths ready, the GEMM reads W unpacked
      dw_ = init.fn<cpu::DwConvF32Fn>("dwconv_f32", &impl);
      gemm_ = GemmF32(init, &impl);
      copy_rows_ = init.fn<cpu::CopyRowsF32Fn>("copy_rows_f32", nullptr);
      impl = "runtime_w:" + impl;
      return;
    }
    layout_ = conv_layout(init.attrs, w->shape, group_);
    MOPT_CHECK(!pool2_ || ((layout_.depthwise || layout_.multiplier) &&
                           (init.in_dtypes.size() <= 3 || init.in_dtypes[3] == DType::kUndefined)),
               ErrorCode::kInvalidModel, "maxpool_2x2 is fused only into a depthwise or channel-multiplier convolution "
               "with no residual; W is ", shape_str(w->shape), ", group ", group_);
    // (multiplier weights packed for the GEMM by an older compiler stay on the GEMM)
    if (layout_.multiplier && init.consts[1].format.empty()) {
      w_plain_ = w->ptr<float>();
      dw_ = init.fn<cpu::DwConvF32Fn>("dwconv_f32", &impl);
      impl = "depthwise_multiplier:" + impl;
      return;
    }
    layout_.multiplier = false;
    if (layout_.depthwise) {
      MOPT_CHECK(init.consts[1].format.empty(), ErrorCode::kInvalidModel, "depthwise weights must not be packed");
      w_plain_ = w->ptr<float>();
      dw_ = init.fn<cpu::DwConvF32Fn>("dwconv_f32", &impl);
      if (impl.find("dwconv_f32@avx512") != std::string::npos) dw_block_max_width_ = kDwBlockMaxWidthAvx512;
      dw_block_ = init.fn<cpu::DwConvBlockF32Fn>("dwconv_block_f32", &impl);
      impl = "depthwise:" + impl;
      return;
    }
    gemm_ = GemmF32(init, &impl);
    if (init.attrs.get_int("winograd", 0) != 0 && winograd_fits(layout_, group_)) {
      load_winograd(init);
      impl = "winograd_f4x4_3x3:" + impl;
      return;
    }
    copy_rows_ = init.fn<cpu::CopyRowsF32Fn>("copy_rows_f32", nullptr);
    patches_ = is_patchify(layout_.geom, group_);
    transposed_ = patches_ || pixels_as_rows(layout_.Mg, init.attrs.get_int("_out_pixels", 0), gemm_.mr(), gemm_.nr());
    load_weights(init.consts[1]);
    if (patches_) impl += ",patches";
    else if (transposed_) impl += ",pixels_x_channels";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const bool runtime_w = layout_.wshape.empty();
    const float* w_plain = w_plain_;
    ConvLayout local;
    if (runtime_w) {
      const Tensor& w = ctx.in(1);
      MOPT_ENSURE(w.dtype == DType::kF32, "W must be float32");
      local = conv_layout(attrs_, w.shape, group_);
      w_plain = w.ptr<float>();
    }
    const ConvLayout& L = runtime_w ? local : layout_;
    const ConvGeom& G = L.geom;
    const Shape& ws = L.wshape;
    const int64_t Mg = L.Mg, Kg = L.Kg;
    const int sp = G.spatial;
    MOPT_ENSURE(x.rank() == 2 + sp, "X must have rank ", 2 + sp, ", got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1];
    MOPT_ENSURE(C == ws[1] * group_, "X has ", C, " channels; W ", shape_str(ws), " with group ", group_,
                " expects ", ws[1] * group_);
    const int64_t H = sp == 2 ? x.shape[2] : 1, W = x.shape[1 + sp];
    int64_t OH = 1, OW = 0, PT = 0, PL = 0;
    if (sp == 2) out_dim(G.auto_pad, H, G.KH, G.SH, G.DH, G.PT, G.PB, &OH, &PT);
    out_dim(G.auto_pad, W, G.KW, G.SW, G.DW, G.PL, G.PR, &OW, &PL);
    const int64_t M = ws[0];
    // with a fused 2x2 / stride-2 max pool the node's output is the pooled one
    const int64_t POH = OH >= 2 ? (OH - 2) / 2 + 1 : 0, POW = OW >= 2 ? (OW - 2) / 2 + 1 : 0;
    Shape ys = pool2_ ? Shape{N, M, POH, POW} : sp == 2 ? Shape{N, M, OH, OW} : Shape{N, M, OW};
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    const Tensor* bias = ctx.input(2);
    if (bias && bias->numel() == 0) bias = nullptr;
    if (bias) MOPT_ENSURE(bias->numel() == M, "B has ", bias->numel(), " elements, expected ", M);
    const Tensor* res = ctx.input(3);
    if (res) MOPT_ENSURE(res->shape == ys, "residual input has shape ", shape_str(res->shape), ", expected ",
                         shape_str(ys));
    const int64_t OHW = OH * OW, HW = H * W;
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const float* bp = bias ? bias->ptr<float>() : nullptr;
    const float* rp = res ? res->ptr<float>() : nullptr;

    if (L.depthwise && dw_block_ && w_plain && OW < dw_block_max_width_ && !pool2_) {
      // Narrow planes: a vector of channels at a time (a 7-wide row would fill half a vector).
      const cpu::DwConvArgs geo = dw_geometry(G, H, W, OH, OW, PT, PL, act_);
      const int threads = ctx.pool().num_threads();
      const size_t per_thread = (static_cast<size_t>(cpu::dwconv_block_scratch_floats(geo)) + 15) / 16 * 16;
      float* scratch = static_cast<float*>(ctx.scratch(per_thread * threads * sizeof(float)));
      const int64_t blocks_per_image = (M + lanes_ - 1) / lanes_;
      ctx.pool().run_tasks(N * blocks_per_image, [&](int64_t task, int thread) {
        const int64_t n = task / blocks_per_image, c0 = (task % blocks_per_image) * lanes_;
        cpu::DwConvBlockArgs a{};
        a.geo = geo;
        a.geo.scratch = scratch + per_thread * thread;
        a.nc = std::min<int64_t>(lanes_, M - c0);
        a.x = xp + (n * M + c0) * HW;
        a.w = w_plain + c0 * G.KH * G.KW;
        a.bias = bp ? bp + c0 : nullptr;
        a.y = yp + (n * M + c0) * OHW;
        a.residual = rp ? rp + (n * M + c0) * OHW : nullptr;
        dw_block_(a);
      });
      return;
    }
    if (L.depthwise || (L.multiplier && (runtime_w || w_plain_))) {
      // Output channel t of the batch reads input plane t / Mg. Each thread takes a contiguous
      // range of output channels and pads each input plane once for its outputs in that range.
      // With the pool fused, a run's planes are computed into scratch and only pooled ones stored.
      const cpu::DwConvArgs proto = dw_geometry(G, H, W, OH, OW, PT, PL, act_);
      const int threads = ctx.pool().num_threads();
      const size_t pad_floats = (static_cast<size_t>(cpu::dwconv_scratch_floats(proto)) + 15) / 16 * 16;
      const size_t per_thread = pad_floats + (pool2_ ? static_cast<size_t>(Mg * OHW + 15) / 16 * 16 : 0);
      float* scratch = static_cast<float*>(ctx.scratch(per_thread * threads * sizeof(float)));
      const int64_t total = N * M, chunk = (total + threads - 1) / threads, POHW = POH * POW;
      ctx.pool().run_tasks(threads, [&](int64_t task, int thread) {
        cpu::DwConvArgs a = proto;
        a.scratch = scratch + per_thread * thread;
        float* planes = a.scratch + pad_floats;
        const int64_t end = std::min(total, (task + 1) * chunk);
        for (int64_t t = task * chunk; t < end;) {
          const int64_t plane = t / Mg, run = std::min(end, (plane + 1) * Mg) - t, c = t % M;
          a.x = xp + plane * HW;
          a.w = w_plain + c * G.KH * G.KW;
          a.y = pool2_ ? planes : yp + t * OHW;
          a.residual = rp ? rp + t * OHW : nullptr;
          a.mult = run;
          a.biases = bp ? bp + c : nullptr;
          a.bias = 0.f;
          dw_(a);
          if (pool2_)
            for (int64_t r = 0; r < run; ++r) max_pool_2x2(planes + r * OHW, yp + (t + r) * POHW, OW, POH, POW);
          t += run;
        }
      });
      return;
    }

    if (wino_.u) {
      run_winograd(ctx, xp, yp, bp, rp, N, C, H, W, OH, OW, PT, PL);
      return;
    }
    if (patches_ && !runtime_w) {
      run_patches(ctx, xp, yp, bp, rp, N, C, H, W, OH, OW);
      return;
    }
    const int64_t Cg = ws[1];
    const bool direct = G.KH == 1 && G.KW == 1 && G.SH == 1 && G.SW == 1 && PT == 0 && PL == 0 &&
                        OH == H && OW == W;
    // Channels x pixels (the usual way): B, the image through im2col (or read directly for 1x1), is
    // packed a block of columns at a time by whichever thread computes those columns, and used at
    // once by every row panel of the weights while it is in cache. Packing all of an image first
    // wrote K x pixels floats out to memory and read them back (VGG's first layers: 115 MB).
    // Pixels x channels (few pixels): the image, packed once in MR-row panels, is the A operand.
    const bool tr = transposed_ && !runtime_w;
    const size_t b_floats = tr ? (GemmF32::packed_b_floats(Kg, OHW, gemm_.mr()) + 15) / 16 * 16
                               : (GemmF32::packed_b_floats(Kg, 1, gemm_.nr()) + 15) / 16 * 16;  // one panel
    const size_t panel = runtime_w ? 0
                         : tr        ? GemmF32::packed_b_floats(Kg, Mg, gemm_.nr())
                                     : GemmF32::packed_a_floats(Mg, Kg, gemm_.mr());
    Im2Col geo;  // the image of one (n, g), its x set per call
    geo.C = Cg; geo.H = H; geo.W = W; geo.KH = G.KH; geo.KW = G.KW;
    geo.SH = G.SH; geo.SW = G.SW; geo.PH = PT; geo.PW = PL; geo.DH = G.DH; geo.DW = G.DW;
    geo.OH = OH; geo.OW = OW;
    geo.copy_rows = copy_rows_;
    // A padded image is copied once, padding included, so that its packing is plain row copies.
    size_t pad_floats = 0;
    Im2Col padded = geo;  // the geometry packing sees (the padded image's, when it is padded)
    if (!direct && !im2col_inside(geo)) {
      int64_t hp = 0, wp = 0;
      im2col_padded_extent(geo, &hp, &wp);
      pad_floats = static_cast<size_t>(Cg * hp * wp + 15) / 16 * 16;
      padded.H = hp;
      padded.W = wp;
      padded.PH = padded.PW = 0;
    }
    // The row offsets of im2col's K rows in that image, once for every panel of every image.
    const size_t koff_bytes = direct ? 0 : (static_cast<size_t>(Kg) * sizeof(int64_t) + 63) / 64 * 64;

    // The store of image n, group g from C's element at yoff: bias per channel, the residual laid
    // out as C, for C as channels x pixels or (pixels_rows) stored transposed.
    // Where group g's output channel i goes: g * Mg + i, or with the channel shuffle folded in,
    // i * group + g (its rows `group` channels apart).
    const int64_t channel_step = shuffle_ ? group_ : 1;
    auto first_channel = [&](int64_t g) { return shuffle_ ? g : g * Mg; };
    auto epilogue_for = [&](int64_t g, int64_t yoff, bool pixels_rows) {
      cpu::Epilogue ep;
      ep.act = act_;
      if (bp) {
        ep.bias = bp + g * Mg;
        ep.bias_axis = pixels_rows ? 1 : 0;
      }
      if (rp) {
        ep.residual = rp + yoff;
        ep.res_rs = pixels_rows ? 1 : OHW;
        ep.res_cs = pixels_rows ? OHW : 1;
      }
      return ep;
    };
    // C[channels x pixels j0..j0+cols) of image n, group g: everything but B.
    auto channels_problem = [&](int64_t n, int64_t g, int64_t j0, int64_t cols) {
      GemmProblem p;
      p.M = Mg;
      p.N = cols;
      p.K = Kg;
      if (runtime_w) {
        p.a.data = w_plain + g * Mg * Kg;
        p.a.rs = Kg;
        p.a.cs = 1;
      } else {
        p.a.packed = w_packed_ + panel * g;
      }
      const int64_t yoff = (n * M + first_channel(g)) * OHW + j0;
      p.c = yp + yoff;
      p.ldc = channel_step * OHW;
      p.ep = epilogue_for(g, yoff, false);
      return p;
    };
    float* shared_b = nullptr;  // set below on the path that splits images across the threads
    // One image and group. pool == nullptr: all of it on the calling thread. `buf` holds b_floats
    // (one B panel, or for pixels x channels all of the image packed), then pad_floats.
    auto one = [&](int64_t n, int64_t g, float* buf, void* scratch, ThreadPool* pool) {
      const float* xg = xp + (n * C + g * Cg) * HW;
      Im2Col src = geo;
      GemmB b;
      if (direct) {
        b.data = xg;
        b.rs = HW;
        b.cs = 1;
      } else {
        src.x = xg;
        if (pad_floats) {  // (one image across the threads: its channels padded in parallel)
          float* dst = buf + b_floats;
          const int64_t plane = padded.H * padded.W;
          auto pad = [&](int64_t c0, int64_t c1) {
            Im2Col part = geo;
            part.x = xg + c0 * HW;
            part.C = c1 - c0;
            im2col_pad(part, dst + c0 * plane);
          };
          if (pool) pool->parallel_for(Cg, 1, pad);
          else pad(0, Cg);
          src = padded;
          src.x = dst;
        }
        b.im2col = &src;
      }
      if (tr) {  // Y^T[pixels x channels] = im2col(X)^T * W^T, stored transposed into NCHW
        if (pool) GemmF32::pack_b_all(b, Kg, OHW, gemm_.mr(), buf, *pool);
        else GemmF32::pack_b(b, Kg, OHW, gemm_.mr(), buf);
        const int64_t yoff = (n * M + first_channel(g)) * OHW;
        GemmProblem p;
        p.M = OHW;
        p.N = Mg;
        p.K = Kg;
        p.a.packed = buf;
        p.b.packed = w_packed_ + panel * g;
        p.c = yp + yoff;
        p.ldc = 1;
        p.c_cs = channel_step * OHW;
        p.ep = epilogue_for(g, yoff, true);
        if (pool) gemm_.run(p, *pool, scratch);
        else gemm_.run_serial(p, scratch);
        return;
      }
      if (pool) {  // each task packs the block of B it uses
        GemmProblem p = channels_problem(n, g, 0, OHW);
        p.b = b;
        // B is split by columns only, each block packed once, on one thread or over enough columns
        // to balance the threads (ResNet-50's 1x1 layers at 56x56: 5-8% faster than a raw B packed
        // again per block of rows); few columns split by rows as well balance better (its 14x14 layers).
        const int threads = pool->num_threads();
        p.pack_b_once = threads == 1 || (OHW + gemm_.nr() - 1) / gemm_.nr() >= 8 * threads;
        if (shared_b && !p.pack_b_once && gemm_.row_blocks(p, threads) > 1) {
          // im2col over few columns, split by rows too: packed once, by all the threads, rather
          // than once per block of rows (ResNet-50's 3x3/2 over 256 channels at 14x14: 3 times)
          GemmF32::pack_b_all(b, Kg, OHW, gemm_.nr(), shared_b, *pool);
          p.b = GemmB{};
          p.b.packed = shared_b;
        }
        gemm_.run(p, *pool, scratch);
        return;
      }
      // On one thread: each column panel packed, then used by every row panel while in L1.
      const int nr = gemm_.nr();
      for (int64_t j0 = 0; j0 < OHW; j0 += nr) {
        const int64_t cols = std::min<int64_t>(nr, OHW - j0);
        GemmF32::pack_b_panel(b, Kg, j0, cols, nr, buf);
        GemmProblem p = channels_problem(n, g, j0, cols);
        p.b.packed = buf;
        gemm_.run_serial(p, scratch);
      }
    };
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    const int64_t items = N * group_;
    // Many small images (a batch through a small CNN, or the groups of a grouped conv): each thread
    // takes whole images, with no synchronisation inside one. Splitting one small image across
    // threads costs more in wake-ups and barriers than its arithmetic (64 x [1->32, 32x32]: 4x).
    const double flops = 2.0 * static_cast<double>(Mg) * static_cast<double>(Kg) * static_cast<double>(OHW);
    if (T > 1 && items >= 2 * T && flops < 4e7) {
      const size_t gemm_bytes = (gemm_.scratch_bytes(1) + 63) / 64 * 64;
      const size_t per = (b_floats + pad_floats) * sizeof(float) + gemm_bytes;
      char* scratch = static_cast<char*>(ctx.scratch(per * T + koff_bytes));
      if (koff_bytes) {
        int64_t* koffs = reinterpret_cast<int64_t*>(scratch + per * T);
        im2col_koffs(padded, koffs);
        geo.koffs = padded.koffs = koffs;
      }
      pool.run_tasks(items, [&](int64_t item, int thread) {
        char* mine = scratch + per * thread;
        one(item / group_, item % group_, reinterpret_cast<float*>(mine),
            mine + (b_floats + pad_floats) * sizeof(float), nullptr);
      });
      return;
    }
    const size_t main_bytes = (b_floats + pad_floats) * sizeof(float) + gemm_.scratch_bytes(T);
    // (all of an im2col B packed once, for the layers split by rows as well as columns)
    bool share_b = !direct && !tr && T > 1 && (OHW + gemm_.nr() - 1) / gemm_.nr() < 8 * T;
    if (share_b) {
      GemmProblem probe;
      probe.M = Mg;
      probe.N = OHW;
      probe.K = Kg;
      share_b = gemm_.row_blocks(probe, T) > 1;
    }
    const size_t shared_floats = share_b ? (GemmF32::packed_b_floats(Kg, OHW, gemm_.nr()) + 15) / 16 * 16 : 0;
    float* buf = static_cast<float*>(ctx.scratch(main_bytes + koff_bytes + shared_floats * sizeof(float)));
    void* scratch = buf + b_floats + pad_floats;
    if (shared_floats) shared_b = reinterpret_cast<float*>(reinterpret_cast<char*>(buf) + main_bytes + koff_bytes);
    if (koff_bytes) {
      int64_t* koffs = reinterpret_cast<int64_t*>(reinterpret_cast<char*>(buf) + main_bytes);
      im2col_koffs(padded, koffs);
      geo.koffs = padded.koffs = koffs;
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < group_; ++g) one(n, g, buf, scratch, &pool);
  }

 private:
  // Uses the prepacked weights when they are packed the way this kernel runs; otherwise unpacks
  // them (from either layout, for any tile size) and packs them again.
  void load_weights(const ConstInput& c) {
    const std::string want = transposed_ ? pack_format("conv_bt", "nr", gemm_.nr(), group_)
                                         : pack_format("conv_a", "mr", gemm_.mr(), group_);
    if (c.format == want) {
      w_packed_ = c.tensor->ptr<float>();
      impl += ",prepacked_w";
      return;
    }
    std::vector<float> unpacked;
    const float* plain = plain_weights(c, &unpacked);
    owned_.resize(pack_conv_weights(plain, layout_.wshape[0], layout_.Kg, group_, transposed_, gemm_.mr(), gemm_.nr(), nullptr));
    pack_conv_weights(plain, layout_.wshape[0], layout_.Kg, group_, transposed_, gemm_.mr(), gemm_.nr(), owned_.data());
    w_packed_ = owned_.data();
  }

  // The weights as plain [M][K] floats: the constant itself, or unpacked into `unpacked` from
  // either packing, for any tile size.
  const float* plain_weights(const ConstInput& c, std::vector<float>* out) const {
    const int64_t Mg = layout_.Mg, Kg = layout_.Kg;
    const float* plain = c.tensor->ptr<float>();
    std::vector<float>& unpacked = *out;
    if (!c.format.empty()) {
      std::string kind;
      int n = 0;
      int64_t g = 1;
      MOPT_CHECK(parse_pack_format(c.format, &kind, &n, &g) && (kind == "conv_a" || kind == "conv_bt") && g == group_,
                 ErrorCode::kInvalidModel, "unknown weight packing '", c.format, "'");
      unpacked.resize(static_cast<size_t>(layout_.wshape[0] * Kg));
      std::vector<float> wt(kind == "conv_bt" ? static_cast<size_t>(Kg * Mg) : 0);
      const size_t foreign = kind == "conv_a" ? GemmF32::packed_a_floats(Mg, Kg, n) : GemmF32::packed_b_floats(Kg, Mg, n);
      for (int64_t gi = 0; gi < group_; ++gi) {
        float* dst = unpacked.data() + gi * Mg * Kg;
        if (kind == "conv_a") {
          GemmF32::unpack_a(c.tensor->ptr<float>() + foreign * gi, Mg, Kg, n, dst);
        } else {  // W^T panels: unpack to [K][M], transpose back to [M][K]
          GemmF32::unpack_b(c.tensor->ptr<float>() + foreign * gi, Kg, Mg, n, wt.data());
          for (int64_t k = 0; k < Kg; ++k)
            for (int64_t m = 0; m < Mg; ++m) dst[m * Kg + k] = wt[k * Mg + m];
        }
      }
      plain = unpacked.data();
    }
    return plain;
  }

  // Winograd: the transformed filters, prepacked by the compiler for this micro-kernel or made here.
  void load_winograd(const KernelInit& init) {
    const ConstInput& c = init.consts[1];
    const int64_t M = layout_.wshape[0], C = layout_.wshape[1];
    wino_.stride = GemmF32::packed_a_floats(M, C, gemm_.mr());
    if (c.format == pack_format("wino43_a", "mr", gemm_.mr())) {
      MOPT_CHECK(c.nbytes == 36 * wino_.stride * sizeof(float), ErrorCode::kInvalidModel, "Winograd weights of ",
                 c.nbytes, " bytes, expected ", 36 * wino_.stride * sizeof(float));
      wino_.u = c.tensor->ptr<float>();
      impl += ",prepacked_w";
      return bind_winograd(init);
    }
    owned_.resize(36 * wino_.stride);
    std::string kind;
    int n = 0;
    int64_t g = 1;
    if (parse_pack_format(c.format, &kind, &n, &g) && kind == "wino43_a") {  // packed for another micro-kernel
      const size_t foreign = GemmF32::packed_a_floats(M, C, n);
      MOPT_CHECK(g == 1 && c.nbytes == 36 * foreign * sizeof(float), ErrorCode::kInvalidModel, "Winograd weights of ",
                 c.nbytes, " bytes, expected ", 36 * foreign * sizeof(float));
      std::vector<float> plain(static_cast<size_t>(M * C));
      for (int xi = 0; xi < 36; ++xi) {
        GemmF32::unpack_a(c.tensor->ptr<float>() + xi * foreign, M, C, n, plain.data());
        pack_rows(plain.data(), M, C, gemm_.mr(), owned_.data() + xi * wino_.stride);
      }
    } else {
      std::vector<float> unpacked;
      winograd_weights(plain_weights(c, &unpacked), M, C, gemm_.mr(), owned_.data());
    }
    wino_.u = owned_.data();
    bind_winograd(init);
  }

  void bind_winograd(const KernelInit& init) {
    wino_.in = init.fn<cpu::Wino43InF32Fn>("wino43_input_f32", nullptr);
    wino_.out = init.fn<cpu::Wino43OutF32Fn>("wino43_output_f32", nullptr);
    wino_.epilogue = init.fn<cpu::EpilogueF32Fn>("epilogue_f32", nullptr);
  }

  // Non-overlapping patches (is_patchify), image by image: its pixels' windows copied into the rows
  // of im2col^T (KW floats at a time), then Y^T[pixels x channels] = rows * W^T, A read in place and
  // C stored transposed into NCHW.
  void run_patches(KernelContext& ctx, const float* xp, float* yp, const float* bp, const float* rp, int64_t N,
                   int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW) {
    const ConvGeom& G = layout_.geom;
    const int64_t M = layout_.wshape[0], K = layout_.Kg, OHW = OH * OW, KH = G.KH, KW = G.KW;
    // the rows' stride: never a multiple of 4 KB (rows that share an L1 set are copied, not read in place)
    const int64_t lda = K % 1024 == 0 ? K + 16 : K;
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    const size_t rows_bytes = (static_cast<size_t>(OHW * lda) * sizeof(float) + 63) / 64 * 64;
    const size_t offs_bytes = (static_cast<size_t>(C * KH) * sizeof(int64_t) + 63) / 64 * 64;
    char* scratch = static_cast<char*>(ctx.scratch(rows_bytes + offs_bytes + gemm_.scratch_bytes(T)));
    float* rows = reinterpret_cast<float*>(scratch);
    // a window's runs (channel c, row ky) from its top-left corner, in im2col's K order
    int64_t* offs = reinterpret_cast<int64_t*>(scratch + rows_bytes);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ky = 0; ky < KH; ++ky) offs[c * KH + ky] = c * H * W + ky * W;
    for (int64_t n = 0; n < N; ++n) {
      const float* xn = xp + n * C * H * W;
      pool.parallel_for(OHW, 8, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p)
          copy_rows_(xn + (p / OW) * KH * W + (p % OW) * KW, offs, C * KH, KW, 1, rows + p * lda, KW);
      });
      GemmProblem p;
      p.M = OHW;
      p.N = M;
      p.K = K;
      p.a.data = rows;
      p.a.rs = lda;
      p.a.cs = 1;
      p.b.packed = w_packed_;
      p.c = yp + n * M * OHW;
      p.ldc = 1;
      p.c_cs = OHW;
      p.ep.act = act_;
      if (bp) {
        p.ep.bias = bp;
        p.ep.bias_axis = 1;
      }
      if (rp) {
        p.ep.residual = rp + n * M * OHW;
        p.ep.res_rs = 1;
        p.ep.res_cs = OHW;
      }
      gemm_.run(p, pool, scratch + rows_bytes + offs_bytes);
    }
  }

  // Blocks of tile rows: the input transform of every channel (a task per channel), the 36 GEMMs
  // (tasks of MR-row chunks), the output transform and the epilogue (a task per output channel).
  void run_winograd(KernelContext& ctx, const float* xp, float* yp, const float* bp, const float* rp, int64_t N,
                    int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t PT, int64_t PL) {
    const int64_t M = layout_.wshape[0], OHW = OH * OW;
    const int64_t tw = (OW + 3) / 4, th = (OH + 3) / 4;
    const int64_t nr = gemm_.nr(), mr = gemm_.mr();
    // a block's tiles, rounded up to whole vectors (16 floats covers every ISA's), and to B panels
    auto round16 = [](int64_t t) { return (t + 15) / 16 * 16; };
    auto round_nr = [&](int64_t t) { return (t + nr - 1) / nr * nr; };
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    int64_t rows_per_block = std::max<int64_t>(1, std::min(th, kWinoBlockTiles / tw));
    // Enough tiles for every thread to take whole blocks: each runs its blocks start to end (input
    // transform, 36 GEMMs, output transform) with no barrier between the steps. Shared blocks wait
    // for all the threads three times each; when the host stalls one of them, all wait: 16 -> 64
    // channels at 54x54 measured 0.28-0.33 ms either way, but 0.68 shared against 0.32 in a noisy spell.
    const bool own_blocks = T > 1 && N * th * tw >= kWinoMinTilesPerThread * T;
    if (own_blocks) rows_per_block = std::max<int64_t>(1, std::min(th, kWinoOwnBlockTiles / tw));
    if (own_blocks && N < T) {  // the blocks of one image in a multiple of the threads
      const int64_t want = (std::max<int64_t>((th + rows_per_block - 1) / rows_per_block, (T + N - 1) / N) + T - 1) / T * T;
      rows_per_block = std::max<int64_t>(1, (th + want - 1) / want);
    }
    const int64_t blocks = (th + rows_per_block - 1) / rows_per_block;
    const int64_t tp_max = round16(rows_per_block * tw);
    const int64_t copies = own_blocks ? T : 1;  // of the transformed input and GEMM output blocks
    const size_t v_floats = static_cast<size_t>(36 * C * round_nr(tp_max)), m_floats = static_cast<size_t>(36 * M * tp_max);
    const size_t thread_floats =
        (static_cast<size_t>(std::max(cpu::wino43_in_scratch_floats(tp_max, tw), 16 * tp_max)) + 15) / 16 * 16;
    const size_t gemm_bytes = (gemm_.scratch_bytes(1) + 63) / 64 * 64;
    const size_t per_thread = thread_floats * sizeof(float) + gemm_bytes;
    char* base = static_cast<char*>(ctx.scratch((v_floats + m_floats) * copies * sizeof(float) + per_thread * T));
    char* thread_base = base + (v_floats + m_floats) * copies * sizeof(float);
    // GEMM tasks of shared blocks: 36 positions x chunks of whole MR panels, enough for the threads
    const int64_t panels = (M + mr - 1) / mr;
    const int64_t chunks = own_blocks ? 1 : std::min<int64_t>(panels, std::max<int64_t>(1, (4 * T + 35) / 36));
    const int64_t panels_per_chunk = (panels + chunks - 1) / chunks;
    // Tile rows [ty0, ty0 + rows) of image n: the steps' tasks on `on`, or all on the calling thread
    // `thread` when null, with that thread's own copy of the buffers.
    auto block = [&](int64_t n, int64_t ty0, ThreadPool* on, int thread) {
      const float* xn = xp + n * C * H * W;
      float* yn = yp + n * M * OHW;
      float* V = reinterpret_cast<float*>(base) + (v_floats + m_floats) * (on ? 0 : thread);
      float* Mb = V + v_floats;
      cpu::Epilogue ep;
      ep.act = act_;
      ep.bias = bp;
      if (rp) {
        ep.residual = rp + n * M * OHW;
        ep.res_rs = OHW;
        ep.res_cs = 1;
      }
      const int64_t rows = std::min(rows_per_block, th - ty0), tp = round16(rows * tw), vs = C * round_nr(tp);
      auto steps = [&](int64_t count, const std::function<void(int64_t, int)>& fn) {
        if (on) on->run_tasks(count, fn);
        else for (int64_t i = 0; i < count; ++i) fn(i, thread);
      };
      steps(C, [&](int64_t c, int th_id) {
        cpu::Wino43InArgs a{};
        a.x = xn + c * H * W;
        a.H = H; a.W = W; a.PT = PT; a.PL = PL;
        a.ty0 = ty0; a.rows = rows; a.tiles_w = tw; a.tiles_pad = tp; a.nr = nr;
        a.v = V + c * nr;
        a.xi_stride = vs;
        a.panel_stride = C * nr;
        a.scratch = reinterpret_cast<float*>(thread_base + per_thread * th_id);
        wino_.in(a);
      });
      steps(36 * chunks, [&](int64_t task, int th_id) {
        const int64_t xi = task / chunks, p0 = (task % chunks) * panels_per_chunk;
        const int64_t m0 = p0 * mr, m1 = std::min(M, (p0 + panels_per_chunk) * mr);
        if (m0 >= m1) return;
        GemmProblem p;
        p.M = m1 - m0;
        p.N = tp;
        p.K = C;
        p.a.packed = wino_.u + xi * wino_.stride + p0 * C * mr;
        p.b.packed = V + xi * vs;
        p.c = Mb + (xi * M + m0) * tp;
        p.ldc = tp;
        gemm_.run_serial(p, thread_base + per_thread * th_id + thread_floats * sizeof(float));
      });
      const int64_t oy0 = 4 * ty0, oy1 = std::min(OH, 4 * (ty0 + rows));
      steps(M, [&](int64_t k, int th_id) {
        cpu::Wino43OutArgs a{};
        a.m = Mb + k * tp;
        a.xi_stride = M * tp;
        a.y = yn + k * OHW;
        a.OH = OH; a.OW = OW; a.ty0 = ty0; a.rows = rows; a.tiles_w = tw; a.tiles_pad = tp;
        a.scratch = reinterpret_cast<float*>(thread_base + per_thread * th_id);
        wino_.out(a);
        wino_.epilogue(yn + k * OHW + oy0 * OW, OHW, 1, (oy1 - oy0) * OW, k, oy0 * OW, ep);
      });
    };
    if (own_blocks) {
      pool.run_tasks(N * blocks, [&](int64_t task, int thread) {
        block(task / blocks, (task % blocks) * rows_per_block, nullptr, thread);
      });
      return;
    }
    for (int64_t n = 0; n < N; ++n)
      for (int64_t b = 0; b < blocks; ++b) block(n, b * rows_per_block, &pool, 0);
  }

  Attrs attrs_;
  int64_t group_ = 1;
  ConvLayout layout_;  // empty wshape: W is computed at run time
  cpu::UnaryParams act_;
  GemmF32 gemm_;
  bool transposed_ = false;  // pixels x channels (see pixels_as_rows)
  bool patches_ = false;     // non-overlapping windows (see is_patchify): pixels x channels over copied rows
  bool pool2_ = false;       // a 2x2 / stride-2 max pool fused after the activation (one input channel per group)
  int64_t shuffle_ = 0;      // a channel shuffle of the groups fused after the activation (0: none)
  const float* w_packed_ = nullptr;
  std::vector<float> owned_;
  const float* w_plain_ = nullptr;
  cpu::CopyRowsF32Fn copy_rows_ = nullptr;  // im2col packing over a padded image
  cpu::DwConvF32Fn dw_ = nullptr;
  cpu::DwConvBlockF32Fn dw_block_ = nullptr;  // narrow planes, channels in the vector lanes
  int64_t dw_block_max_width_ = kDwBlockMaxWidth;
  struct Wino43 {
    const float* u = nullptr;  // the 36 transformed filter matrices [M][C], each packed as a GEMM A operand
    size_t stride = 0;     // floats from one to the next
    cpu::Wino43InF32Fn in = nullptr;
    cpu::Wino43OutF32Fn out = nullptr;
    cpu::EpilogueF32Fn epilogue = nullptr;
  } wino_;  // u null: not Winograd
  static constexpr int64_t lanes_ = 16;  // channels per block call (the kernel splits them by its vector width)
};

std::unique_ptr<Kernel> make_conv(const KernelInit& init) { return std::make_unique<ConvKernel>(init); }

bool prepack_conv(const Attrs& attrs, int input, const Tensor& w, Isa isa, PackedWeight* out) {
  if (input != 1 || w.dtype != DType::kF32 || (w.rank() != 3 && w.rank() != 4)) return false;
  const int64_t group = attrs.get_int("group", 1);
  if (group < 1 || w.shape[0] % group != 0 || is_depthwise(w.shape, group) || is_multiplier(w.shape, group))
    return false;
  const cpu::GemmUkernelF32* uk = GemmF32::ukernel_for(isa);
  if (attrs.get_int("winograd", 0) != 0 && winograd_fits(conv_layout(attrs, w.shape, group), group)) {
    const int64_t M = w.shape[0], C = w.shape[1];
    out->format = pack_format("wino43_a", "mr", uk->mr);
    out->shape = w.shape;
    out->bytes.resize(36 * GemmF32::packed_a_floats(M, C, uk->mr) * sizeof(float));
    winograd_weights(w.ptr<float>(), M, C, uk->mr, reinterpret_cast<float*>(out->bytes.data()));
    return true;
  }
  const int64_t M = w.shape[0], K = filter_size(w.shape);
  const bool tr = is_patchify(attrs, w.shape, group) || pixels_as_rows(M / group, attrs.get_int("_out_pixels", 0), uk->mr, uk->nr);
  out->format = tr ? pack_format("conv_bt", "nr", uk->nr, group) : pack_format("conv_a", "mr", uk->mr, group);
  out->shape = w.shape;
  out->bytes.resize(pack_conv_weights(w.ptr<float>(), M, K, group, tr, uk->mr, uk->nr, nullptr) * sizeof(float));
  pack_conv_weights(w.ptr<float>(), M, K, group, tr, uk->mr, uk->nr, reinterpret_cast<float*>(out->bytes.data()));
  return true;
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  const std::vector<DType> f32 = {DType::kF32};
  r.add({"", "Conv", f32, &make_conv, &prepack_conv});
  r.add({"com.mopt", "FusedConv", f32, &make_conv, &prepack_conv});
}

}  // namespace mopt
