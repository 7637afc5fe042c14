#include "mopt/registry.h"

namespace mopt {

// Each ISA folder defines one of these; the build defines MOPT_HAVE_<ISA> for folders it compiled.
void register_scalar_kernels(KernelTable& table);
void register_scalar_qgemm_kernels(KernelTable& table);
#ifdef MOPT_HAVE_AVX2
void register_avx2_kernels(KernelTable& table);
void register_avx2_qgemm_kernels(KernelTable& table);
#endif
#ifdef MOPT_HAVE_AVX512
void register_avx512_kernels(KernelTable& table);
void register_avx512_qgemm_kernels(KernelTable& table);
#endif
#ifdef MOPT_HAVE_NEON
void register_neon_kernels(KernelTable& table);
#endif

void KernelTable::add(const char* name, Isa isa, const void* fn) { rows_[name].push_back({isa, fn}); }

const void* KernelTable::find(const std::string& name, Isa cap, Isa* chosen) const {
  auto it = rows_.find(name);
  if (it == rows_.end()) return nullptr;
  const Row* best = nullptr;
  for (const Row& r : it->second) {
    if (!isa_supported(r.isa) || !isa_allows(cap, r.isa)) continue;
    if (!best || static_cast<int>(r.isa) > static_cast<int>(best->isa)) best = &r;
  }
  if (!best) return nullptr;
  if (chosen) *chosen = best->isa;
  return best->fn;
}

std::vector<std::string> KernelTable::names() const {
  std::vector<std::string> out;
  for (const auto& kv : rows_) out.push_back(kv.first);
  return out;
}

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t;
    register_scalar_kernels(t);
    register_scalar_qgemm_kernels(t);
#ifdef MOPT_HAVE_AVX2
    register_avx2_kernels(t);
    register_avx2_qgemm_kernels(t);
#endif
#ifdef MOPT_HAVE_AVX512
    register_avx512_kernels(t);
    register_avx512_qgemm_kernels(t);
#endif
#ifdef MOPT_HAVE_NEON
    register_neon_kernels(t);
#endif
    return t;
  }();
  return table;
}

}  // namespace mopt
