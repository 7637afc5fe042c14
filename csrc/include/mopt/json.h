// A small JSON reader/writer for the program description inside model.mopt. The reader checks
// every bound and nesting depth: the file comes from disk and is not trusted.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mopt {

class Json {
 public:
  enum class Kind { kNull, kBool, kInt, kFloat, kString, kArray, kObject };

  Json() = default;
  static Json parse(const char* data, size_t size);  // throws Error(kInvalidModel)

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }

  // Typed accessors; each throws kInvalidModel with `what` in the message on a type mismatch.
  bool as_bool(const char* what = "value") const;
  int64_t as_int(const char* what = "value") const;
  double as_float(const char* what = "value") const;  // ints convert
  const std::string& as_string(const char* what = "value") const;
  const std::vector<Json>& as_array(const char* what = "value") const;
  const std::map<std::string, Json>& as_object(const char* what = "value") const;

  bool has(const std::string& key) const;
  const Json& at(const std::string& key) const;   // throws when missing
  const Json* find(const std::string& key) const;  // nullptr when missing
  size_t size() const;

 private:
  friend class JsonParser;
  Kind kind_ = Kind::kNull;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0.0;
  std::string s_;
  std::vector<Json> a_;
  std::map<std::string, Json> o_;
};

}  // namespace mopt
