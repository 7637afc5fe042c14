#include "mopt/json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "mopt/status.h"

namespace mopt {

namespace {
constexpr int kMaxDepth = 256;
[[noreturn]] void bad(const char* what) { fail(ErrorCode::kInvalidModel, "program JSON: expected ", what); }
}  // namespace

class JsonParser {
 public:
  JsonParser(const char* p, size_t n) : p_(p), end_(p + n) {}

  Json parse_document() {
    Json v = value(0);
    skip_ws();
    if (p_ != end_) error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const char* what) {
    fail(ErrorCode::kInvalidModel, "program JSON is malformed at byte ", offset(), ": ", what);
  }
  size_t offset() const { return static_cast<size_t>(p_ - start_) ; }

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool consume(const char* lit) {
    size_t n = std::strlen(lit);
    if (static_cast<size_t>(end_ - p_) >= n && std::memcmp(p_, lit, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  Json value(int depth) {
    if (depth > kMaxDepth) error("nesting too deep");
    skip_ws();
    if (p_ >= end_) error("unexpected end");
    Json v;
    char c = *p_;
    if (c == '{') {
      ++p_;
      v.kind_ = Json::Kind::kObject;
      skip_ws();
      if (p_ < end_ && *p_ == '}') { ++p_; return v; }
      for (;;) {
        skip_ws();
        if (p_ >= end_ || *p_ != '"') error("a string key");
        std::string key = string();
        skip_ws();
        if (p_ >= end_ || *p_ != ':') error("':'");
        ++p_;
        v.o_[key] = value(depth + 1);
        skip_ws();
        if (p_ < end_ && *p_ == ',') { ++p_; continue; }
        if (p_ < end_ && *p_ == '}') { ++p_; return v; }
        error("',' or '}'");
      }
    }
    if (c == '[') {
      ++p_;
      v.kind_ = Json::Kind::kArray;
      skip_ws();
      if (p_ < end_ && *p_ == ']') { ++p_; return v; }
      for (;;) {
        v.a_.push_back(value(depth + 1));
        skip_ws();
        if (p_ < end_ && *p_ == ',') { ++p_; continue; }
        if (p_ < end_ && *p_ == ']') { ++p_; return v; }
        error("',' or ']'");
      }
    }
    if (c == '"') {
      v.kind_ = Json::Kind::kString;
      v.s_ = string();
      return v;
    }
    if (consume("true")) { v.kind_ = Json::Kind::kBool; v.b_ = true; return v; }
    if (consume("false")) { v.kind_ = Json::Kind::kBool; v.b_ = false; return v; }
    if (consume("null")) return v;
    if (consume("NaN")) { v.kind_ = Json::Kind::kFloat; v.f_ = std::numeric_limits<double>::quiet_NaN(); return v; }
    if (consume("Infinity")) { v.kind_ = Json::Kind::kFloat; v.f_ = INFINITY; return v; }
    if (consume("-Infinity")) { v.kind_ = Json::Kind::kFloat; v.f_ = -INFINITY; return v; }
    return number();
  }

  Json number() {
    const char* s = p_;
    bool is_float = false;
    if (p_ < end_ && (*p_ == '-' || *p_ == '+')) ++p_;
    while (p_ < end_) {
      char c = *p_;
      if (c >= '0' && c <= '9') { ++p_; continue; }
      if (c == '.' || c == 'e' || c == 'E' || ((c == '-' || c == '+') && (p_[-1] == 'e' || p_[-1] == 'E'))) {
        is_float = true;
        ++p_;
        continue;
      }
      break;
    }
    if (p_ == s) error("a value");
    std::string text(s, p_);
    Json v;
    char* endp = nullptr;
    errno = 0;
    if (!is_float) {
      long long i = std::strtoll(text.c_str(), &endp, 10);
      if (errno == 0 && endp && *endp == 0) {
        v.kind_ = Json::Kind::kInt;
        v.i_ = i;
        v.f_ = static_cast<double>(i);
        return v;
      }
      errno = 0;
    }
    double f = std::strtod(text.c_str(), &endp);
    if (!endp || *endp != 0) error("a number");
    v.kind_ = Json::Kind::kFloat;
    v.f_ = f;
    return v;
  }

  std::string string() {
    ++p_;  // opening quote
    std::string out;
    while (p_ < end_ && *p_ != '"') {
      char c = *p_++;
      if (c != '\\') { out.push_back(c); continue; }
      if (p_ >= end_) error("an escape");
      char e = *p_++;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          if (end_ - p_ < 4) error("four hex digits");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            char h = *p_++;
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else error("a hex digit");
          }
          if (cp >= 0xD800 && cp <= 0xDBFF && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            unsigned lo = 0;
            const char* q = p_ + 2;
            for (int i = 0; i < 4; ++i) {
              char h = q[i];
              lo <<= 4;
              if (h >= '0' && h <= '9') lo |= h - '0';
              else if (h >= 'a' && h <= 'f') lo |= h - 'a' + 10;
              else if (h >= 'A' && h <= 'F') lo |= h - 'A' + 10;
              else error("a hex digit");
            }
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              p_ += 6;
            }
          }
          if (cp < 0x80) {
            out.push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
          } else if (cp < 0x10000) {
            out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
          } else {
            out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
          }
          break;
        }
        default: error("a valid escape");
      }
    }
    if (p_ >= end_) error("a closing quote");
    ++p_;
    return out;
  }

  const char* p_;
  const char* end_;
  const char* start_ = p_;
};

Json Json::parse(const char* data, size_t size) { return JsonParser(data, size).parse_document(); }

bool Json::as_bool(const char* what) const {
  if (kind_ == Kind::kBool) return b_;
  if (kind_ == Kind::kInt) return i_ != 0;
  bad(what);
}
int64_t Json::as_int(const char* what) const {
  if (kind_ == Kind::kInt) return i_;
  if (kind_ == Kind::kBool) return b_ ? 1 : 0;
  if (kind_ == Kind::kFloat && std::floor(f_) == f_ && std::fabs(f_) < 9.2e18) return static_cast<int64_t>(f_);
  fail(ErrorCode::kInvalidModel, "program JSON: expected an integer for ", what);
}
double Json::as_float(const char* what) const {
  if (kind_ == Kind::kFloat || kind_ == Kind::kInt) return f_;
  fail(ErrorCode::kInvalidModel, "program JSON: expected a number for ", what);
}
const std::string& Json::as_string(const char* what) const {
  if (kind_ != Kind::kString) fail(ErrorCode::kInvalidModel, "program JSON: expected a string for ", what);
  return s_;
}
const std::vector<Json>& Json::as_array(const char* what) const {
  if (kind_ != Kind::kArray) fail(ErrorCode::kInvalidModel, "program JSON: expected an array for ", what);
  return a_;
}
const std::map<std::string, Json>& Json::as_object(const char* what) const {
  if (kind_ != Kind::kObject) fail(ErrorCode::kInvalidModel, "program JSON: expected an object for ", what);
  return o_;
}
bool Json::has(const std::string& key) const { return kind_ == Kind::kObject && o_.count(key) != 0; }
const Json& Json::at(const std::string& key) const {
  const Json* j = find(key);
  if (!j) fail(ErrorCode::kInvalidModel, "program JSON: missing key '", key, "'");
  return *j;
}
const Json* Json::find(const std::string& key) const {
  if (kind_ != Kind::kObject) return nullptr;
  auto it = o_.find(key);
  return it == o_.end() ? nullptr : &it->second;
}
size_t Json::size() const {
  return kind_ == Kind::kArray ? a_.size() : kind_ == Kind::kObject ? o_.size() : 0;
}

}  // namespace mopt
