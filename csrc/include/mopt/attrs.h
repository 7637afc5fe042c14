// Typed access to a node's attributes (a JSON object written by the Python lowering).
#pragma once

#include <string>
#include <vector>

#include "mopt/json.h"

namespace mopt {

class Attrs {
 public:
  Attrs() = default;
  explicit Attrs(const Json* obj) : obj_(obj) {}

  bool has(const std::string& name) const { return obj_ && obj_->find(name) != nullptr; }
  int64_t get_int(const std::string& name, int64_t dflt) const;
  int64_t get_int(const std::string& name) const;  // required
  double get_float(const std::string& name, double dflt) const;
  std::string get_string(const std::string& name, const std::string& dflt) const;
  std::vector<int64_t> get_ints(const std::string& name, std::vector<int64_t> dflt = {}) const;
  std::vector<double> get_floats(const std::string& name, std::vector<double> dflt = {}) const;
  const Json* get(const std::string& name) const { return obj_ ? obj_->find(name) : nullptr; }

 private:
  const Json* obj_ = nullptr;
};

}  // namespace mopt
