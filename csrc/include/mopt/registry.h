// The table of hot loops per ISA. Each ISA folder adds its rows explicitly (register_<isa>_kernels);
// lookups return the best row whose ISA the host supports and the session's cap allows.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "mopt/cpu_features.h"
#include "mopt/status.h"

namespace mopt {

class KernelTable {
 public:
  // `fn` points at a function or at a descriptor struct; its type is fixed by the row's name.
  void add(const char* name, Isa isa, const void* fn);
  const void* find(const std::string& name, Isa cap, Isa* chosen = nullptr) const;

  template <class T>
  T get(const char* name, Isa cap, Isa* chosen = nullptr) const {
    const void* p = find(name, cap, chosen);
    if (!p) fail(ErrorCode::kInternal, "no kernel row '", name, "' for ISA ", isa_name(cap));
    return reinterpret_cast<T>(const_cast<void*>(p));
  }
  std::vector<std::string> names() const;

 private:
  struct Row {
    Isa isa;
    const void* fn;
  };
  std::unordered_map<std::string, std::vector<Row>> rows_;
};

const KernelTable& kernel_table();  // filled once, on first use

template <class F>
const void* fn_row(F f) {
  return reinterpret_cast<const void*>(f);
}

}  // namespace mopt
