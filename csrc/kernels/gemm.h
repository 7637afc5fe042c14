// The blocked, packed fp32 GEMM driver shared by Gemm, MatMul and Conv:
//   C[M x N] = epilogue(A[M x K] * B[K x N])
// A and B are either prepacked into micro-kernel panels (weights, packed at compile time) or
// read from memory and packed block by block (activations; for Conv, straight from the image).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/isa_fns.h"
#include "mopt/kernel.h"

namespace mopt {

struct GemmA {
  const float* packed = nullptr;  // panels of MR rows over all K: [ceil(M/MR)][K][MR]
  const float* data = nullptr;    // raw: element (i, k) at data[i * rs + k * cs]
  int64_t rs = 0, cs = 0;
};

// A convolution input seen as the K x N matrix of im2col, K = C*KH*KW, N = OH*OW.
struct Im2Col {
  const float* x = nullptr;  // [C, H, W] of one image and group
  int64_t C = 0, H = 0, W = 0, KH = 0, KW = 0, SH = 1, SW = 1, PH = 0, PW = 0, DH = 1, DW = 1, OH = 0, OW = 0;
  cpu::CopyRowsF32Fn copy_rows = nullptr;  // the session ISA's row copy (unit stride, inside the image)
  const int64_t* koffs = nullptr;  // optional, for windows inside the image: im2col_koffs() of this geometry
};

// The offset of each im2col row k = (c, ky, kx) from a window's top-left corner: c*H*W + ky*DH*W + kx*DW.
void im2col_koffs(const Im2Col& s, int64_t* offs);

// True when every window of `s` lies inside its image (no padding to supply while packing).
bool im2col_inside(const Im2Col& s);
// The rows and columns of `s`'s image, padding included, that its windows reach.
void im2col_padded_extent(const Im2Col& s, int64_t* hp, int64_t* wp);
// Copies `s`'s image into dst ([C][hp][wp] of im2col_padded_extent, zeros where the padding is):
// the same convolution over it has no padding, and packing copies rows with no bounds to check.
void im2col_pad(const Im2Col& s, float* dst);

struct GemmB {
  const float* packed = nullptr;  // panels of NR columns over all K: [ceil(N/NR)][K][NR]
  int64_t packed_k = 0;           // depth the panels were packed with, when the problem reads only
                                  // their first K rows (0: K)
  const float* data = nullptr;    // raw: element (k, n) at data[k * rs + n * cs]
  int64_t rs = 0, cs = 0;
  const Im2Col* im2col = nullptr;
};

struct GemmProblem {
  int64_t M = 0, N = 0, K = 0;
  GemmA a;
  GemmB b;
  float* c = nullptr;
  int64_t ldc = 0;
  int64_t c_cs = 1;  // column stride of C; != 1: C is written transposed (e.g. pixels x channels into NCHW)
  cpu::Epilogue ep;
  // Split the work by columns only, so that a B read through im2col (or raw) is packed once per
  // column block, by the thread that uses it, rather than once per row block.
  bool pack_b_once = false;
};

class GemmF32 {
 public:
  GemmF32() = default;
  GemmF32(const KernelInit& init, std::string* impl);  // binds this session's micro-kernel
  static const cpu::GemmUkernelF32* ukernel_for(Isa isa);

  int mr() const { return uk_->mr; }
  int nr() const { return uk_->nr; }

  // Bytes of scratch run() needs for this problem shape (per call; covers every thread).
  size_t scratch_bytes(int threads) const;
  void run(const GemmProblem& p, ThreadPool& pool, void* scratch) const;
  // Whether full row panels of A are read in place by the micro-kernel (no A packing).
  bool reads_a_in_place(const GemmProblem& p) const;
  // Whether full row panels of a row-major A that cannot be read in place are copied, a depth
  // block at a time, into rows the micro-kernel then reads in place (instead of packed).
  bool copies_a_rows(const GemmProblem& p) const;
  // Floats of scratch to pack all of a raw A once, where the grid would otherwise pack it again
  // for every column block (0: not worth it). run_packing_a() then takes that much more scratch,
  // after scratch_bytes(threads).
  size_t a_pack_floats(const GemmProblem& p, int threads) const;
  void run_packing_a(const GemmProblem& p, ThreadPool& pool, void* scratch) const;
  // How many blocks of rows run() splits p into on `threads` threads (each packs its own copy of an
  // unpacked B's columns).
  int64_t row_blocks(const GemmProblem& p, int threads) const { return grid(p, threads).mt; }
  // The same on the calling thread only; `scratch` holds scratch_bytes(1).
  void run_serial(const GemmProblem& p, void* scratch) const;

  // Panel packing, also used ahead of time (prepack) and to undo a foreign packing.
  static size_t packed_a_floats(int64_t M, int64_t K, int mr);
  static void pack_a(const GemmA& a, int64_t M, int64_t K, int mr, float* dst);
  static void unpack_a(const float* packed, int64_t M, int64_t K, int mr, float* dst);  // row-major
  static size_t packed_b_floats(int64_t K, int64_t N, int nr);
  static void pack_b(const GemmB& b, int64_t K, int64_t N, int nr, float* dst);
  // Columns j0..j0+cols (cols <= nr) of B as one panel.
  static void pack_b_panel(const GemmB& b, int64_t K, int64_t j0, int64_t cols, int nr, float* dst);
  // All of B (raw or im2col) packed once, panels split across the pool's threads.
  static void pack_b_all(const GemmB& b, int64_t K, int64_t N, int nr, float* dst, ThreadPool& pool);
  static void unpack_b(const float* packed, int64_t K, int64_t N, int nr, float* dst);  // row-major
  // pack_b, with a B stored transposed (unit row stride: attention's K^T) moved through the ISA's
  // register transpose instead of a strided gather per element.
  void pack_b_isa(const GemmB& b, int64_t K, int64_t N, float* dst) const;

 private:
  struct Grid {
    int64_t mc, nc;            // the largest block's rows and columns
    int64_t mt, nt;            // blocks of rows and of columns
    int64_t npanels;           // NR-column panels
    bool balanced_cols = false;  // column block b has panels [b * npanels / nt, ...) (else nc columns each)
    bool col_major = false;  // task t is row block t % mt of column block t / mt (else t / nt, t % nt)
    bool stream = false;     // full tiles are stored past the caches (cpu::kGemmStream)
  };
  Grid grid(const GemmProblem& p, int threads) const;
  void run_task(const GemmProblem& p, const Grid& g, int64_t task, float* buf) const;
  bool handle_degenerate(const GemmProblem& p) const;
  int rows_fit(int64_t rows) const;
  cpu::GemmUkernelF32::FusedFn fused_kernel(const GemmProblem& p) const;
  cpu::GemmRowsF32Fn rows_fn(int64_t rows) const;

  const cpu::GemmUkernelF32* uk_ = nullptr;
  cpu::EpilogueF32Fn epilogue_ = nullptr;
  cpu::TransposeF32Fn transpose_ = nullptr;  // the store of a C computed transposed
  bool cache_c_ = false;  // attribute _cache_c: C is read at once by the next kernel (see grid())
};

// Format tags for packed weights: "<kind>:<tile>=<n>[:g=<groups>]".
std::string pack_format(const char* kind, const char* tile, int n, int64_t groups = 1);
bool parse_pack_format(const std::string& f, std::string* kind, int* n, int64_t* groups);

}  // namespace mopt
