#include "mopt/attrs.h"

#include "mopt/status.h"

namespace mopt {

int64_t Attrs::get_int(const std::string& name, int64_t dflt) const {
  const Json* j = get(name);
  return j ? j->as_int(name.c_str()) : dflt;
}

int64_t Attrs::get_int(const std::string& name) const {
  const Json* j = get(name);
  if (!j) fail(ErrorCode::kInvalidModel, "missing required attribute '", name, "'");
  return j->as_int(name.c_str());
}

double Attrs::get_float(const std::string& name, double dflt) const {
  const Json* j = get(name);
  return j ? j->as_float(name.c_str()) : dflt;
}

std::string Attrs::get_string(const std::string& name, const std::string& dflt) const {
  const Json* j = get(name);
  return j ? j->as_string(name.c_str()) : dflt;
}

std::vector<int64_t> Attrs::get_ints(const std::string& name, std::vector<int64_t> dflt) const {
  const Json* j = get(name);
  if (!j) return dflt;
  std::vector<int64_t> out;
  for (const Json& v : j->as_array(name.c_str())) out.push_back(v.as_int(name.c_str()));
  return out;
}

std::vector<double> Attrs::get_floats(const std::string& name, std::vector<double> dflt) const {
  const Json* j = get(name);
  if (!j) return dflt;
  std::vector<double> out;
  for (const Json& v : j->as_array(name.c_str())) out.push_back(v.as_float(name.c_str()));
  return out;
}

}  // namespace mopt
