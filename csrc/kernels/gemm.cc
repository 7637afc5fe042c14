#include "kernels/gemm.h"

#include <algorithm>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "mopt/status.h"
#include "mopt/thread_pool.h"

namespace mopt {

namespace {
constexpr int64_t kKC = 256;   // depth of one packed block (A panel + B panel stay in L1)
// A remainder of K up to a quarter block joins the last block instead of making a block of its
// own, which would store and reload every C tile for a few k (a 3x3 conv over 30-32 channels:
// K = 270-288).
constexpr int64_t kKCMax = kKC + kKC / 4;
constexpr int64_t kMC = 120;   // rows of A per block (kept in L2)
constexpr int64_t kNC = 512;   // columns of B per block per thread
constexpr int kMaxTile = 32 * 64;  // largest MR*NR of any micro-kernel
constexpr double kStreamBytes = 1 << 20;  // a C at least this large is stored past the caches
constexpr double kCachedCBytes = 8 << 20;  // ... unless the next kernel reads it (_cache_c) and it is at most this

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A copy of a few floats (one output row of an im2col panel: usually 8..32), inlined: a libc
// memcpy call per row cost about as much as the GEMM's arithmetic on a 3x3 conv's 16x16 maps.
inline void copy_floats(float* __restrict d, const float* __restrict s, int64_t n) {
#if defined(__SSE2__)
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) {
    _mm_storeu_ps(d + t, _mm_loadu_ps(s + t));
    _mm_storeu_ps(d + t + 4, _mm_loadu_ps(s + t + 4));
  }
  for (; t + 4 <= n; t += 4) _mm_storeu_ps(d + t, _mm_loadu_ps(s + t));
  for (; t < n; ++t) d[t] = s[t];
#else
  std::memcpy(d, s, static_cast<size_t>(n) * sizeof(float));
#endif
}

// One run of a panel's columns that lie on the same output row of an im2col source.
struct RowSegment {
  int64_t off, len, iy0, ix0;  // panel column offset, length, window origin of its first column
};

}  // namespace

bool im2col_inside(const Im2Col& s) {
  return s.PH == 0 && s.PW == 0 && (s.OH - 1) * s.SH + (s.KH - 1) * s.DH < s.H &&
         (s.OW - 1) * s.SW + (s.KW - 1) * s.DW < s.W;
}

void im2col_padded_extent(const Im2Col& s, int64_t* hp, int64_t* wp) {
  *hp = s.OH > 0 ? (s.OH - 1) * s.SH + (s.KH - 1) * s.DH + 1 : 0;
  *wp = s.OW > 0 ? (s.OW - 1) * s.SW + (s.KW - 1) * s.DW + 1 : 0;
}

void im2col_koffs(const Im2Col& s, int64_t* offs) {
  for (int64_t c = 0, k = 0; c < s.C; ++c)
    for (int64_t ky = 0; ky < s.KH; ++ky)
      for (int64_t kx = 0; kx < s.KW; ++kx) offs[k++] = c * s.H * s.W + ky * s.DH * s.W + kx * s.DW;
}

void im2col_pad(const Im2Col& s, float* dst) {
  int64_t hp = 0, wp = 0;
  im2col_padded_extent(s, &hp, &wp);
  for (int64_t c = 0; c < s.C; ++c) {
    const float* xc = s.x + c * s.H * s.W;
    for (int64_t y = 0; y < hp; ++y) {
      float* d = dst + (c * hp + y) * wp;
      const int64_t iy = y - s.PH;
      if (iy < 0 || iy >= s.H) {
        std::memset(d, 0, static_cast<size_t>(wp) * sizeof(float));
        continue;
      }
      const int64_t lo = std::min(wp, s.PW), hi = std::max(lo, std::min(wp, s.PW + s.W));
      for (int64_t x = 0; x < lo; ++x) d[x] = 0.f;
      copy_floats(d + lo, xc + iy * s.W + (lo - s.PW), hi - lo);
      for (int64_t x = hi; x < wp; ++x) d[x] = 0.f;
    }
  }
}

namespace {

// Packs im2col rows k0..k0+kc of columns j0..j0+cols into dst[k][nr]. The columns are cut into
// output-row segments once; each (k, segment) is then one contiguous or strided copy with its
// out-of-image ends zero-filled, instead of a bounds check and a division per element.
void pack_im2col_block(const Im2Col& s, int64_t k0, int64_t kc, int64_t j0, int64_t cols, int nr, float* dst) {
  RowSegment seg[64];
  int nseg = 0;
  for (int64_t j = 0; j < cols;) {
    const int64_t n = j0 + j, oy = n / s.OW, ox = n % s.OW;
    const int64_t len = std::min(cols - j, s.OW - ox);
    if (nseg == 64) break;  // more rows than the table holds (never for cols <= 64): per-element path
    seg[nseg++] = {j, len, oy * s.SH - s.PH, ox * s.SW - s.PW};
    j += len;
  }
  const bool segmented = nseg == 0 || seg[nseg - 1].off + seg[nseg - 1].len == cols;
  int64_t kx = k0 % s.KW, ky = (k0 / s.KW) % s.KH, c = k0 / (s.KW * s.KH);
  if (segmented && im2col_inside(s)) {
    // Every window lies inside the (pre-padded) image: each (k, segment) is one copy (strided for a
    // column stride > 1), with no bounds and no zero ends -- branches whose pattern changed with kx,
    // and the divisions a stride needed, cost more than the copies.
    // Each k's offset into the image, then one row copy per segment over a run of k (the ISA's
    // vector copy when bound: a 16-float row is one load and one store).
    constexpr int64_t kRun = 256;
    int64_t own[kRun];
    for (int64_t k1 = 0; k1 < kc; k1 += kRun) {
      const int64_t n = std::min(kRun, kc - k1);
      const int64_t* offs = own;
      if (s.koffs) {
        offs = s.koffs + k0 + k1;
      } else {
        for (int64_t k = 0; k < n; ++k) {
          own[k] = c * s.H * s.W + ky * s.DH * s.W + kx * s.DW;
          if (++kx == s.KW) {
            kx = 0;
            if (++ky == s.KH) {
              ky = 0;
              ++c;
            }
          }
        }
      }
      float* d = dst + k1 * nr;
      for (int i = 0; i < nseg; ++i) {
        const float* src = s.x + seg[i].iy0 * s.W + seg[i].ix0;
        if (s.copy_rows) {
          s.copy_rows(src, offs, n, seg[i].len, s.SW, d + seg[i].off, nr);
        } else if (s.SW == 1) {
          for (int64_t k = 0; k < n; ++k) copy_floats(d + k * nr + seg[i].off, src + offs[k], seg[i].len);
        } else {
          for (int64_t k = 0; k < n; ++k)
            for (int64_t t = 0; t < seg[i].len; ++t) d[k * nr + seg[i].off + t] = src[offs[k] + t * s.SW];
        }
      }
      if (cols < nr)
        for (int64_t k = 0; k < n; ++k) std::fill(d + k * nr + cols, d + (k + 1) * nr, 0.f);
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float* xc = s.x + c * s.H * s.W;
    float* d = dst + k * nr;
    if (segmented) {
      for (int i = 0; i < nseg; ++i) {
        const RowSegment& g = seg[i];
        float* o = d + g.off;
        const int64_t iy = g.iy0 + ky * s.DH;
        if (iy < 0 || iy >= s.H) {
          std::memset(o, 0, static_cast<size_t>(g.len) * sizeof(float));
          continue;
        }
        const int64_t ix = g.ix0 + kx * s.DW;  // input column of the segment's first element
        const float* src = xc + iy * s.W + ix;
        if (s.SW == 1) {  // no divisions: they cost more than the copy of a short row
          const int64_t lo = std::min(g.len, std::max<int64_t>(0, -ix));
          const int64_t hi = std::max(lo, std::min(g.len, s.W - ix));
          for (int64_t t = 0; t < lo; ++t) o[t] = 0.f;
          copy_floats(o + lo, src + lo, hi - lo);
          for (int64_t t = hi; t < g.len; ++t) o[t] = 0.f;
          continue;
        }
        // elements t with 0 <= ix + t*SW < W
        const int64_t lo = ix >= 0 ? 0 : std::min(g.len, (-ix + s.SW - 1) / s.SW);
        const int64_t hi = ix >= s.W ? lo : std::max(lo, std::min(g.len, (s.W - ix + s.SW - 1) / s.SW));
        for (int64_t t = 0; t < lo; ++t) o[t] = 0.f;
        for (int64_t t = lo; t < hi; ++t) o[t] = src[t * s.SW];
        for (int64_t t = hi; t < g.len; ++t) o[t] = 0.f;
      }
    } else {
      int64_t n = j0, oy = n / s.OW, ox = n % s.OW;
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t iy = oy * s.SH - s.PH + ky * s.DH, ix = ox * s.SW - s.PW + kx * s.DW;
        d[j] = (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) ? xc[iy * s.W + ix] : 0.f;
        if (++ox == s.OW) {
          ox = 0;
          ++oy;
        }
      }
    }
    for (int64_t j = cols; j < nr; ++j) d[j] = 0.f;
    if (++kx == s.KW) {
      kx = 0;
      if (++ky == s.KH) {
        ky = 0;
        ++c;
      }
    }
  }
}

// Packs B(k0..k0+kc, j0..j0+cols) into dst[k][nr], zero-padding the columns past `cols`.
void pack_b_block(const GemmB& b, int64_t k0, int64_t kc, int64_t j0, int64_t cols, int nr, float* dst) {
  if (b.im2col) {
    pack_im2col_block(*b.im2col, k0, kc, j0, cols, nr, dst);
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    float* d = dst + k * nr;
    const float* src = b.data + (k0 + k) * b.rs + j0 * b.cs;
    if (b.cs == 1) {
      copy_floats(d, src, cols);
    } else {
      for (int64_t j = 0; j < cols; ++j) d[j] = src[j * b.cs];
    }
    for (int64_t j = cols; j < nr; ++j) d[j] = 0.f;
  }
}

#if defined(__SSE2__)
// Rows src[0..3] at columns k..k+3, transposed: d[t * mr + r] = src[r][k + t].
inline void pack_a_4x4(const float* const* src, int64_t k, float* d, int mr) {
  __m128 r0 = _mm_loadu_ps(src[0] + k), r1 = _mm_loadu_ps(src[1] + k);
  __m128 r2 = _mm_loadu_ps(src[2] + k), r3 = _mm_loadu_ps(src[3] + k);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(d, r0);
  _mm_storeu_ps(d + mr, r1);
  _mm_storeu_ps(d + 2 * mr, r2);
  _mm_storeu_ps(d + 3 * mr, r3);
}
#endif

// Packs A(i0..i0+rows, k0..k0+kc) into dst[k][mr], zero-padding rows past `rows`.
void pack_a_block(const GemmA& a, int64_t i0, int64_t rows, int64_t k0, int64_t kc, int mr, float* dst) {
  if (a.cs == 1 && rows == mr && mr <= 32) {
    // A full panel of row-major rows: k outer, so the panel is written in order (one row of the
    // panel per k) while the mr source rows are each read in order.
    const float* src[32];
    for (int64_t i = 0; i < mr; ++i) src[i] = a.data + (i0 + i) * a.rs + k0;
    int64_t k = 0;
#if defined(__SSE2__)
    // 16 k (a cache line of each row) at a time, 4 rows by 4 k transposed in registers (a scalar
    // gather-scatter of every element cost 5% of a 1024 x 256 by 256 x 768 MatMul), the rows past a
    // multiple of 4 as scalars. Each row's line is used up before the next rows are read: rows 4 KB
    // apart (K = 1024) share one L1 set, and reading 4 k of all 14 rows per step missed on every
    // load (a third of a 128 x 1024 by 1024 x 256 MatMul).
    for (; k + 16 <= kc; k += 16) {
      int64_t i = 0;
      for (; i + 4 <= mr; i += 4)
        for (int64_t kk = k; kk < k + 16; kk += 4) pack_a_4x4(src + i, kk, dst + kk * mr + i, mr);
      for (; i < mr; ++i)
        for (int64_t t = 0; t < 16; ++t) dst[(k + t) * mr + i] = src[i][k + t];
    }
    for (; k + 4 <= kc; k += 4) {
      float* d = dst + k * mr;
      int64_t i = 0;
      for (; i + 4 <= mr; i += 4) pack_a_4x4(src + i, k, d + i, mr);
      for (; i < mr; ++i)
        for (int64_t t = 0; t < 4; ++t) d[t * mr + i] = src[i][k + t];
    }
#endif
    for (; k < kc; ++k)
      for (int64_t i = 0; i < mr; ++i) dst[k * mr + i] = src[i][k];
    return;
  }
  if (a.cs == 1) {
    for (int64_t i = 0; i < rows; ++i) {
      const float* src = a.data + (i0 + i) * a.rs + k0;
      for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = src[k];
    }
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t i = 0; i < rows; ++i) dst[k * mr + i] = a.data[(i0 + i) * a.rs + (k0 + k) * a.cs];
  }
  for (int64_t i = rows; i < mr; ++i)
    for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = 0.f;
}

}  // namespace

std::string pack_format(const char* kind, const char* tile, int n, int64_t groups) {
  std::string f = str_cat(kind, ":", tile, "=", n);
  if (groups != 1) f += str_cat(":g=", groups);
  return f;
}

bool parse_pack_format(const std::string& f, std::string* kind, int* n, int64_t* groups) {
  size_t c1 = f.find(':');
  if (c1 == std::string::npos) return false;
  *kind = f.substr(0, c1);
  size_t eq = f.find('=', c1);
  if (eq == std::string::npos) return false;
  *n = std::atoi(f.c_str() + eq + 1);
  *groups = 1;
  size_t g = f.find(":g=", eq);
  if (g != std::string::npos) *groups = std::atoll(f.c_str() + g + 3);
  return *n > 0 && *groups > 0;
}

const cpu::GemmUkernelF32* GemmF32::ukernel_for(Isa isa) {
  return kernel_table().get<const cpu::GemmUkernelF32*>("sgemm_ukernel", isa);
}

GemmF32::GemmF32(const KernelInit& init, std::string* impl) {
  uk_ = init.fn<const cpu::GemmUkernelF32*>("sgemm_ukernel", nullptr);
  epilogue_ = init.fn<cpu::EpilogueF32Fn>("epilogue_f32", nullptr);
  transpose_ = init.fn<cpu::TransposeF32Fn>("transpose_f32", nullptr);
  cache_c_ = init.attrs.get_int("_cache_c", 0) != 0;
  Isa chosen = Isa::kScalar;
  kernel_table().find("sgemm_ukernel", init.isa, &chosen);
  if (impl) {
    if (!impl->empty()) *impl += ",";
    *impl += str_cat("sgemm_", uk_->mr, "x", uk_->nr, "@", isa_name(chosen));
  }
}

size_t GemmF32::packed_a_floats(int64_t M, int64_t K, int mr) {
  return static_cast<size_t>(ceil_div(M, mr) * mr * K);
}

void GemmF32::pack_a(const GemmA& a, int64_t M, int64_t K, int mr, float* dst) {
  for (int64_t p = 0; p * mr < M; ++p) {
    int64_t rows = std::min<int64_t>(mr, M - p * mr);
    pack_a_block(a, p * mr, rows, 0, K, mr, dst + p * K * mr);
  }
}

void GemmF32::unpack_a(const float* packed, int64_t M, int64_t K, int mr, float* dst) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) dst[i * K + k] = packed[(i / mr) * K * mr + k * mr + i % mr];
}

size_t GemmF32::packed_b_floats(int64_t K, int64_t N, int nr) {
  return static_cast<size_t>(ceil_div(N, nr) * nr * K);
}

void GemmF32::pack_b(const GemmB& b, int64_t K, int64_t N, int nr, float* dst) {
  for (int64_t q = 0; q * nr < N; ++q) {
    int64_t cols = std::min<int64_t>(nr, N - q * nr);
    pack_b_block(b, 0, K, q * nr, cols, nr, dst + q * K * nr);
  }
}

void GemmF32::pack_b_panel(const GemmB& b, int64_t K, int64_t j0, int64_t cols, int nr, float* dst) {
  pack_b_block(b, 0, K, j0, cols, nr, dst);
}

void GemmF32::pack_b_all(const GemmB& b, int64_t K, int64_t N, int nr, float* dst, ThreadPool& pool) {
  const int64_t panels = ceil_div(N, nr);
  pool.parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t q = p0; q < p1; ++q)
      pack_b_block(b, 0, K, q * nr, std::min<int64_t>(nr, N - q * nr), nr, dst + q * K * nr);
  });
}

void GemmF32::unpack_b(const float* packed, int64_t K, int64_t N, int nr, float* dst) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) dst[k * N + n] = packed[(n / nr) * K * nr + k * nr + n % nr];
}

void GemmF32::pack_b_isa(const GemmB& b, int64_t K, int64_t N, float* dst) const {
  const int nr = uk_->nr;
  if (b.rs != 1 || b.im2col || !transpose_) {
    pack_b(b, K, N, nr, dst);
    return;
  }
  for (int64_t j0 = 0; j0 < N; j0 += nr) {
    const int64_t cols = std::min<int64_t>(nr, N - j0);
    float* d = dst + j0 * K;  // panel j0 / nr: [K][nr]
    transpose_(b.data + j0 * b.cs, b.cs, cols, K, d, nr);
    if (cols < nr)
      for (int64_t k = 0; k < K; ++k) std::fill(d + k * nr + cols, d + (k + 1) * nr, 0.f);
  }
}

size_t per_thread_floats(int mr, int nr);

size_t GemmF32::scratch_bytes(int threads) const {
  return per_thread_floats(uk_->mr, uk_->nr) * sizeof(float) * static_cast<size_t>(threads);
}

size_t per_thread_floats(int mr, int nr) {
  // B block, A block, one edge tile, and a C block for problems whose C is written with a stride
  return static_cast<size_t>(kKCMax * round_up(kNC, nr) + round_up(kMC, mr) * kKCMax + kMaxTile + 64 +
                             round_up(kMC, mr) * round_up(kNC, nr));
}

bool GemmF32::handle_degenerate(const GemmProblem& p) const {
  if (p.M <= 0 || p.N <= 0) return true;
  if (p.K > 0) return false;
  for (int64_t i = 0; i < p.M; ++i) std::fill(p.c + i * p.ldc, p.c + i * p.ldc + p.N, 0.f);
  epilogue_(p.c, p.ldc, p.M, p.N, 0, 0, p.ep);  // empty reduction: C = epilogue(0)
  return true;
}

GemmF32::Grid GemmF32::grid(const GemmProblem& p, int threads) const {
  const int MR = uk_->mr, NR = uk_->nr;
  Grid g;
  // (columns only: all rows in one block; a strided C keeps the bounded block its scatter uses)
  const bool by_columns = p.pack_b_once && !p.b.packed && p.c_cs == 1;
  const int64_t mpanels = ceil_div(p.M, MR), npanels = ceil_div(p.N, NR);
  g.npanels = npanels;
  int64_t rb = by_columns ? 1 : ceil_div(p.M, kMC), cb = ceil_div(p.N, kNC);
  // Split by columns only: as many blocks as a multiple of the threads (98 panels on 2 threads: 8
  // blocks of 12-13 panels, not 7 of 14, which leaves one thread a block behind).
  if (by_columns && threads > 1) cb = std::min(npanels, ceil_div(std::max<int64_t>(cb, threads), threads) * threads);
  // Split further until every thread has work (two tasks each, for balance): the dimension with
  // more panels per block first, rows only when columns cannot go further (or when split by columns).
  while (threads > 1 && rb * cb < 2 * threads && (rb < mpanels || cb < npanels)) {
    const bool cols = cb < npanels && (by_columns || rb >= mpanels || npanels / cb >= mpanels / rb);
    if (cols) ++cb;
    else ++rb;
  }
  // Blocks of whole panels: M = 256 in blocks of at most kMC rows is 98 + 98 + 60, not 126 + 126 + 4
  // (a 4-row block runs the short kernel and leaves a thread idle at the end). Split by columns
  // only, the column blocks differ by at most one panel: the threads finish together.
  g.balanced_cols = by_columns;
  g.mc = by_columns ? round_up(p.M, MR) : ceil_div(mpanels, std::min(rb, mpanels)) * MR;
  g.mt = ceil_div(p.M, g.mc);
  g.nt = std::min(cb, npanels);
  g.nc = ceil_div(npanels, g.nt) * NR;
  if (!by_columns) g.nt = ceil_div(p.N, g.nc);  // whole blocks of nc columns, the last one shorter
  // Tasks run in order, so consecutive ones share a block of one operand while it is in cache:
  // the order re-reads the smaller of "all of B per row block" and "all of A per column block".
  // (GPT-2's LM head, 128 x 256 by 256 x 8192: row blocks first streamed its 8 MB B twice.)
  g.col_major = static_cast<double>(g.mt) * static_cast<double>(p.N) > static_cast<double>(g.nt) * static_cast<double>(p.M);
  // A C of a megabyte or more (a core's L2) is streamed past the caches when every full tile is
  // finished in registers in one depth block: its lines were otherwise read in from L3 or memory
  // only to be overwritten. GPT-2 and BERT at 8 x 128 and ResNet-50 ran 4-6% faster, the other
  // CNNs of the ONNX wheel the same within 1%. Not a C of at most kCachedCBytes that the next kernel
  // reads at once (_cache_c: the Q/K/V projection an attention reads right after; from memory, its
  // rows cost the attention 10-15% more at 8 x 128, in-process A/B).
  const double c_bytes = static_cast<double>(p.M) * static_cast<double>(p.N) * sizeof(float);
  g.stream = c_bytes >= kStreamBytes && !(cache_c_ && c_bytes <= kCachedCBytes) && p.c_cs == 1 && p.K <= kKCMax &&
             (p.ep.trivial() || fused_kernel(p));
  return g;
}

// The micro-kernel that finishes p's epilogue in registers, if any (a residual read with a unit
// column stride; none for a trivial epilogue).
cpu::GemmUkernelF32::FusedFn GemmF32::fused_kernel(const GemmProblem& p) const {
  if (!uk_->fused || p.ep.trivial() || (p.ep.residual && p.ep.res_cs != 1)) return nullptr;
  return uk_->fused(p.ep.act.op);
}

// The short-panel kernel for `rows` leftover rows (the fewest of 1/2/4/8 that cover them), if any.
int GemmF32::rows_fit(int64_t rows) const {
  static constexpr int kRows[4] = {1, 2, 4, 8};
  for (int r = 0; r < 4; ++r)
    if (kRows[r] >= rows && kRows[r] < uk_->mr && uk_->rows[r]) return kRows[r];
  return 0;
}

cpu::GemmRowsF32Fn GemmF32::rows_fn(int64_t rows) const {
  switch (rows_fit(rows)) {
    case 1: return uk_->rows[0];
    case 2: return uk_->rows[1];
    case 4: return uk_->rows[2];
    case 8: return uk_->rows[3];
    default: return nullptr;
  }
}

void GemmF32::run_task(const GemmProblem& p, const Grid& g, int64_t task, float* buf) const {
  const int MR = uk_->mr, NR = uk_->nr;
  const int64_t M = p.M, N = p.N, K = p.K;
  float* bbuf = buf;
  float* abuf = bbuf + kKCMax * round_up(kNC, NR);
  float* tile = abuf + round_up(kMC, MR) * kKCMax;
  const int64_t bi = g.col_major ? task % g.mt : task / g.nt, bj = g.col_major ? task / g.mt : task % g.nt;
  const int64_t i0 = bi * g.mc, rows = std::min(g.mc, M - i0);
  const int64_t j0 = g.balanced_cols ? bj * g.npanels / g.nt * NR : bj * g.nc;
  const int64_t cols = g.balanced_cols ? std::min((bj + 1) * g.npanels / g.nt * NR, N) - j0 : std::min(g.nc, N - j0);
  // A strided C is accumulated in a contiguous block, then finished and scattered in one pass.
  const bool scatter = p.c_cs != 1;
  float* cblock = tile + kMaxTile + 64;
  const int64_t ldb = scatter ? round_up(g.nc, NR) : p.ldc;
  const bool b_packed = p.b.packed != nullptr, a_packed = p.a.packed != nullptr;
  // full tiles of the last depth block finish in the micro-kernel's registers
  const cpu::GemmUkernelF32::FusedFn fused = scatter ? nullptr : fused_kernel(p);
  const bool direct_a = reads_a_in_place(p);
  const bool ep_trivial = p.ep.trivial();
  const int64_t b_depth = p.b.packed_k ? p.b.packed_k : K;  // rows of a prepacked panel
  const bool copy_a = copies_a_rows(p);
  for (int64_t k0 = 0, kc = 0; k0 < K; k0 += kc) {
    kc = K - k0 <= kKCMax ? K - k0 : kKC;
    const bool last = k0 + kc == K;
    const int acc = k0 > 0;
    const int acc_full = acc ? 1 : g.stream ? cpu::kGemmStream : 0;  // full tiles (fn, fn_rm, fused)
    if (!b_packed && !p.b.im2col && p.b.cs == 1) {
      // raw row-major B (a 1x1 convolution's image): each row of the block read once, in order, into
      // all its panels. Panel by panel, every row was a separate 128-byte stream (256 rows at a 12 KB
      // stride for 256 channels of 56x56) the prefetcher did not follow: 18% of the time in the copy.
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = p.b.data + (k0 + k) * p.b.rs + j0;
        for (int64_t jp = 0; jp < cols; jp += NR) {
          float* d = bbuf + (jp / NR) * kc * NR + k * NR;
          const int64_t n = std::min<int64_t>(NR, cols - jp);
          copy_floats(d, src + jp, n);  // (inline: a libc call per 128 bytes cost 5-20% of 1x1s over 16-64 channels)
          for (int64_t j = n; j < NR; ++j) d[j] = 0.f;
        }
      }
    } else if (!b_packed) {  // B block: this column range, depth slice [k0, k0+kc), as NR-wide panels
      for (int64_t jp = 0; jp < cols; jp += NR)
        pack_b_block(p.b, k0, kc, j0 + jp, std::min<int64_t>(NR, cols - jp), NR, bbuf + (jp / NR) * kc * NR);
    }
    for (int64_t ip = 0; ip < rows; ip += MR) {
      const int64_t gi = i0 + ip, mr_eff = std::min<int64_t>(MR, M - gi);
      const float* ap;
      // A few leftover rows are packed only as wide as their short kernel (1 row: a plain copy),
      // so it streams A instead of touching a cache line per k.
      const int short_rows = mr_eff < MR ? rows_fit(mr_eff) : 0;
      int64_t a_step = MR;
      int64_t lda = 0;  // > 0: the micro-kernel reads MR rows of A in place
      if (a_packed) {
        ap = p.a.packed + (gi / MR) * K * MR + k0 * MR;
      } else if (mr_eff == MR && direct_a) {
        lda = p.a.rs;
        ap = p.a.data + gi * lda + k0;
      } else if (mr_eff == MR && copy_a) {
        lda = kc + 16;
        for (int64_t r = 0; r < MR; ++r) copy_floats(abuf + r * lda, p.a.data + (gi + r) * p.a.rs + k0, kc);
        ap = abuf;
      } else if (short_rows == 1 && p.a.cs == 1) {  // one row, contiguous: read in place
        a_step = 1;
        ap = p.a.data + gi * p.a.rs + k0;
      } else {
        a_step = short_rows ? short_rows : MR;
        pack_a_block(p.a, gi, mr_eff, k0, kc, static_cast<int>(a_step), abuf);
        ap = abuf;
      }
      // B's panels, one step apart (no division by the run-time NR per tile: 2-3% of a small-MR GEMM)
      const float* bp0 = b_packed ? p.b.packed + (j0 / NR) * b_depth * NR + k0 * NR : bbuf;
      const int64_t bstep = (b_packed ? b_depth : kc) * NR;
      for (int64_t jp = 0, pi = 0; jp < cols; jp += NR, ++pi) {
        const int64_t gj = j0 + jp, nr_eff = std::min<int64_t>(NR, N - gj);
        // an edge tile computed whole in `tile`: its existing part stored into (or added to) C
        auto keep_tile = [&](float* c) {
          for (int64_t i = 0; i < mr_eff; ++i)
            for (int64_t j = 0; j < nr_eff; ++j) c[i * ldb + j] = acc ? c[i * ldb + j] + tile[i * NR + j] : tile[i * NR + j];
        };
        const float* bp = bp0 + pi * bstep;
        float* c = scatter ? cblock + ip * ldb + jp : p.c + gi * p.ldc + gj;
        const cpu::GemmRowsF32Fn short_fn = short_rows ? rows_fn(mr_eff) : nullptr;
        if (fused && last && mr_eff == MR && nr_eff == NR) {
          fused(kc, ap, lda, bp, c, ldb, acc_full, p.ep, gi, gj);
          continue;
        }
        if (lda) {  // A read in place: an edge tile is computed whole, aside (B's panel is zero-padded)
          if (nr_eff == NR) {
            uk_->fn_rm(kc, ap, lda, bp, c, ldb, acc_full);
          } else {
            uk_->fn_rm(kc, ap, lda, bp, tile, NR, 0);
            keep_tile(c);
          }
        } else if (mr_eff == MR && nr_eff == NR) {
          uk_->fn(kc, ap, bp, c, ldb, acc_full);
        } else if (short_fn && nr_eff == NR && short_rows == mr_eff) {  // a few rows, stored in place
          short_fn(kc, ap, a_step, bp, c, ldb, acc);
        } else if (short_fn) {  // a few rows of an edge tile: only those rows computed, aside
          short_fn(kc, ap, a_step, bp, tile, NR, 0);
          keep_tile(c);
        } else if (uk_->edge && mr_eff == MR && nr_eff == uk_->edge_cols) {  // one vector of columns
          uk_->edge(kc, ap, bp, c, ldb, acc);
        } else if (uk_->edge && mr_eff == MR && nr_eff < uk_->edge_cols) {  // less: aside, then kept
          uk_->edge(kc, ap, bp, tile, NR, 0);
          keep_tile(c);
        } else {  // edge tile: compute the full tile aside, keep the part that exists
          uk_->fn(kc, ap, bp, tile, NR, 0);
          keep_tile(c);
        }
        if (last && !scatter && !ep_trivial) epilogue_(c, p.ldc, mr_eff, nr_eff, gi, gj, p.ep);
      }
    }
  }
#if defined(__SSE2__)
  if (g.stream) _mm_sfence();  // the streamed stores visible before the task counts as done
#endif
  if (scatter) {
    epilogue_(cblock, ldb, rows, cols, i0, j0, p.ep);
    if (p.ldc == 1 && transpose_) {  // C transposed: each column of the block is a row of C
      transpose_(cblock, ldb, rows, cols, p.c + i0 + j0 * p.c_cs, p.c_cs);
      return;
    }
    for (int64_t j = 0; j < cols; ++j) {
      float* dst = p.c + i0 * p.ldc + (j0 + j) * p.c_cs;
      for (int64_t i = 0; i < rows; ++i) dst[i * p.ldc] = cblock[i * ldb + j];
    }
  }
}

void GemmF32::run(const GemmProblem& p, ThreadPool& pool, void* scratch) const {
  if (handle_degenerate(p)) return;
  const Grid g = grid(p, pool.num_threads());
  const size_t per = per_thread_floats(uk_->mr, uk_->nr);
  pool.run_tasks(g.mt * g.nt, [&](int64_t task, int thread) {
    run_task(p, g, task, static_cast<float*>(scratch) + per * static_cast<size_t>(thread));
  });
}

// Whole MR-row panels of a row-major A are read in place by the micro-kernel, unpacked: packing
// them was 5-9% of a 1024 x 256 by 256 x N MatMul. Not for a row stride of a multiple of 4 KB,
// whose MR rows would all fall in one L1 set.
bool GemmF32::reads_a_in_place(const GemmProblem& p) const {
  return uk_->fn_rm && !p.a.packed && p.a.data && p.a.cs == 1 && p.a.rs % 1024 != 0;
}

// Those rows (a stride of a multiple of 4 KB) are copied instead, each panel's depth block into rows
// kc + 16 floats apart, and read there in place: a plain copy, where packing transposed them, and
// no separate pass to pack all of A up front (8% of a 128 x 1024 by 1024 x 256 MatMul on 2 threads,
// GPT-2's FFN down-projection at batch 1).
bool GemmF32::copies_a_rows(const GemmProblem& p) const {
  return uk_->fn_rm && !p.a.packed && p.a.data && p.a.cs == 1 && !reads_a_in_place(p);
}

size_t GemmF32::a_pack_floats(const GemmProblem& p, int threads) const {
  if (p.a.packed || !p.a.data || p.M <= 0 || p.N <= 0 || p.K <= 0 || reads_a_in_place(p) || copies_a_rows(p)) return 0;
  const Grid g = grid(p, threads);
  return g.nt > 1 ? packed_a_floats(p.M, p.K, uk_->mr) : 0;
}

void GemmF32::run_packing_a(const GemmProblem& p, ThreadPool& pool, void* scratch) const {
  if (handle_degenerate(p)) return;
  const int T = pool.num_threads();
  const size_t floats = a_pack_floats(p, T);
  if (floats == 0) {
    run(p, pool, scratch);
    return;
  }
  // (A packed per task cost 5% of GPT-2's LM head: 128 x 256 by 256 x 8192, 16 column blocks)
  float* a_packed = reinterpret_cast<float*>(static_cast<char*>(scratch) + scratch_bytes(T));
  const int mr = uk_->mr;
  pool.parallel_for(ceil_div(p.M, mr), 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q)
      pack_a_block(p.a, q * mr, std::min<int64_t>(mr, p.M - q * mr), 0, p.K, mr, a_packed + q * p.K * mr);
  });
  GemmProblem packed = p;
  packed.a.packed = a_packed;
  run(packed, pool, scratch);
}

void GemmF32::run_serial(const GemmProblem& p, void* scratch) const {
  if (handle_degenerate(p)) return;
  const Grid g = grid(p, 1);
  for (int64_t t = 0; t < g.mt * g.nt; ++t) run_task(p, g, t, static_cast<float*>(scratch));
}

}  // namespace mopt
