// Einsum in plain C++: explicit ("ij,jk->ik") and implicit ("ij,jk") forms, ellipses (broadcast,
// right-aligned), repeated labels within an operand (diagonals) and sums over labels that leave.
// Each operand gets one stride per label (the sum of its positions' strides, so a repeated label
// walks the diagonal; 0 where it broadcasts); the products are summed in double, output-major.
#include <algorithm>
#include <cctype>
#include <map>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

constexpr int kEllipsisBase = 1000;  // label codes of ellipsis dims: kEllipsisBase + i

class EinsumKernel final : public Kernel {
 public:
  explicit EinsumKernel(const KernelInit& init) {
    for (char c : init.attrs.get_string("equation", ""))
      if (c != ' ') eq_ += c;
    MOPT_CHECK(!eq_.empty(), ErrorCode::kInvalidModel, "Einsum needs an equation");
    impl = "einsum";
  }

  void run(KernelContext& ctx) override {
    const int n = ctx.num_inputs();
    const size_t arrow = eq_.find("->");
    const std::string lhs = eq_.substr(0, arrow);
    std::vector<std::string> terms(1);
    for (char c : lhs) {
      if (c == ',') terms.emplace_back();
      else terms.back() += c;
    }
    MOPT_ENSURE(static_cast<int>(terms.size()) == n, "equation '", eq_, "' has ", terms.size(), " operands, the node ", n);
    // labels of each operand, ellipsis dims expanded (right-aligned codes)
    std::vector<std::vector<int>> labels(n);
    int ell_rank = 0;
    std::vector<int> ell_of(n, -1);
    for (int k = 0; k < n; ++k) {
      const Tensor& t = ctx.in(k);
      int letters = 0;
      bool ell = false;
      for (size_t i = 0; i < terms[k].size(); ++i) {
        const char c = terms[k][i];
        if (c == '.') {
          MOPT_ENSURE(terms[k].compare(i, 3, "...") == 0 && !ell, "bad ellipsis in '", terms[k], "'");
          ell = true;
          i += 2;
        } else {
          MOPT_ENSURE(std::isalpha(static_cast<unsigned char>(c)), "bad label '", c, "' in '", eq_, "'");
          ++letters;
        }
      }
      const int er = static_cast<int>(t.rank()) - letters;
      MOPT_ENSURE(ell ? er >= 0 : er == 0, "operand ", k, " of shape ", shape_str(t.shape), " does not match '", terms[k],
                  "'");
      if (ell) {
        ell_of[k] = er;
        ell_rank = std::max(ell_rank, er);
      }
    }
    for (int k = 0; k < n; ++k)
      for (size_t i = 0; i < terms[k].size(); ++i) {
        if (terms[k][i] == '.') {
          for (int e = 0; e < ell_of[k]; ++e) labels[k].push_back(kEllipsisBase + ell_rank - ell_of[k] + e);
          i += 2;
        } else {
          labels[k].push_back(terms[k][i]);
        }
      }
    // label sizes (size-1 dims broadcast)
    std::map<int, int64_t> size;
    for (int k = 0; k < n; ++k)
      for (size_t i = 0; i < labels[k].size(); ++i) {
        const int64_t d = ctx.in(k).shape[i];
        auto it = size.find(labels[k][i]);
        if (it == size.end() || it->second == 1) size[labels[k][i]] = d;
        else MOPT_ENSURE(d == it->second || d == 1, "label sizes disagree: ", d, " and ", it->second, " in '", eq_, "'");
      }
    std::vector<int> out;
    if (arrow != std::string::npos) {
      const std::string rhs = eq_.substr(arrow + 2);
      for (size_t i = 0; i < rhs.size(); ++i) {
        if (rhs[i] == '.') {
          MOPT_ENSURE(rhs.compare(i, 3, "...") == 0, "bad ellipsis in the output of '", eq_, "'");
          for (int e = 0; e < ell_rank; ++e) out.push_back(kEllipsisBase + e);
          i += 2;
        } else {
          MOPT_ENSURE(size.count(rhs[i]), "output label '", rhs[i], "' appears in no operand");
          out.push_back(rhs[i]);
        }
      }
    } else {  // implicit: ellipsis dims, then the letters used exactly once, alphabetically
      for (int e = 0; e < ell_rank; ++e) out.push_back(kEllipsisBase + e);
      std::map<int, int> count;
      for (const auto& l : labels)
        for (int c : l) ++count[c];
      for (const auto& [c, k] : count)
        if (c < kEllipsisBase && k == 1) out.push_back(c);
    }
    std::vector<int> summed;
    for (const auto& [c, s] : size)
      if (std::find(out.begin(), out.end(), c) == out.end()) summed.push_back(c);
    std::vector<int> all = out;
    all.insert(all.end(), summed.begin(), summed.end());
    const size_t na = all.size();
    std::vector<std::vector<int64_t>> st(n, std::vector<int64_t>(na, 0));  // [operand][label] strides
    for (int k = 0; k < n; ++k) {
      const std::vector<int64_t> cs = contiguous_strides(ctx.in(k).shape);
      for (size_t i = 0; i < labels[k].size(); ++i) {
        if (ctx.in(k).shape[i] == 1) continue;
        const size_t j = std::find(all.begin(), all.end(), labels[k][i]) - all.begin();
        st[k][j] += cs[i];
      }
    }
    Shape oshape;
    for (int c : out) oshape.push_back(size[c]);
    Shape sshape;
    for (int c : summed) sshape.push_back(size[c]);
    Tensor& y = ctx.output(0, oshape);
    const int64_t no = y.numel(), ns = shape_numel(sshape);
    for (int k = 1; k < n; ++k)
      MOPT_ENSURE(ctx.in(k).dtype == ctx.in(0).dtype, "operand types differ");
    typed::dispatch(ctx.in(0).dtype, "Einsum", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "Einsum of bool has no native kernel");
      } else {
        T* yp = y.ptr<T>();
        std::vector<int64_t> pos(na, 0);
        for (int64_t o = 0; o < no; ++o) {
          int64_t rem = o;
          for (int64_t d = static_cast<int64_t>(out.size()) - 1; d >= 0; --d) {
            pos[d] = rem % oshape[d];
            rem /= oshape[d];
          }
          // integers wrap modulo 2^64 (then narrow), floats accumulate in double
          using Acc = std::conditional_t<std::is_integral_v<T>, uint64_t, double>;
          Acc acc = 0;
          for (int64_t s = 0; s < ns; ++s) {
            int64_t r2 = s;
            for (int64_t d = static_cast<int64_t>(summed.size()) - 1; d >= 0; --d) {
              pos[out.size() + d] = r2 % sshape[d];
              r2 /= sshape[d];
            }
            Acc prod = 1;
            for (int k = 0; k < n; ++k) {
              int64_t off = 0;
              for (size_t j = 0; j < na; ++j) off += pos[j] * st[k][j];
              prod *= static_cast<Acc>(load(ctx.in(k).ptr<T>()[off]));
            }
            acc += prod;
          }
          yp[o] = store<T>(acc);
        }
      }
    });
  }

 private:
  std::string eq_;
};

std::unique_ptr<Kernel> make_einsum(const KernelInit& i) { return std::make_unique<EinsumKernel>(i); }

}  // namespace

void register_einsum_ops(OpRegistry& r) {
  // float16 and bfloat16 stay on the fallback: the reference rounds each partial sum in that type
  r.add({"", "Einsum", {DType::kF32, DType::kF64, DType::kF16, DType::kI32, DType::kI64}, &make_einsum});
}

}  // namespace mopt
