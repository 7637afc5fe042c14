#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "mopt/program.h"
#include "mopt/status.h"

namespace mopt {

namespace {

uint64_t read_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t read_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

[[noreturn]] void invalid(const std::string& msg) { fail(ErrorCode::kInvalidModel, msg); }

void parse_dims(const Json& shape, ValueInfo* v) {
  v->has_shape = true;
  for (const Json& d : shape.as_array("shape")) {
    Dim dim;
    if (d.is_int()) {
      dim.size = d.as_int();
      if (dim.size < 0) invalid(str_cat("value '", v->name, "': negative dimension ", dim.size));
    } else if (d.is_string()) {
      dim.symbol = d.as_string();
    } else if (!d.is_null()) {
      invalid(str_cat("value '", v->name, "': a dimension must be an integer, a name or null"));
    }
    v->dims.push_back(dim);
  }
}

}  // namespace

Program::~Program() {
  if (!map_) return;
  if (mapped_) munmap(map_, map_size_);
  else std::free(map_);
}

std::shared_ptr<Program> Program::load_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::kInvalidArgument, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(ErrorCode::kInvalidArgument, "cannot stat '", path, "': ", std::strerror(e));
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < kHeaderSize) {
    ::close(fd);
    invalid(str_cat("'", path, "' is not a mopt program: ", size, " bytes is shorter than the header"));
  }
  void* base = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) fail(ErrorCode::kRuntime, "cannot map '", path, "': ", std::strerror(errno));
  std::shared_ptr<Program> p(new Program());
  p->map_ = base;
  p->map_size_ = size;
  p->mapped_ = true;
  p->init(static_cast<const uint8_t*>(base), size);
  return p;
}

std::shared_ptr<Program> Program::load_bytes(const void* data, size_t size) {
  if (size < kHeaderSize)
    invalid(str_cat("not a mopt program: ", size, " bytes is shorter than the header"));
  void* copy = nullptr;
  if (posix_memalign(&copy, 64, size) != 0) fail(ErrorCode::kRuntime, "out of memory loading program");
  std::memcpy(copy, data, size);
  std::shared_ptr<Program> p(new Program());
  p->map_ = copy;
  p->map_size_ = size;
  p->mapped_ = false;
  p->init(static_cast<const uint8_t*>(copy), size);
  return p;
}

void Program::init(const uint8_t* base, size_t size) {
  if (std::memcmp(base, kMagic, 8) != 0) invalid("not a mopt program (bad magic bytes)");
  uint32_t version = read_u32(base + 8);
  if (version < kMinFormatVersion || version > kFormatVersion)
    invalid(str_cat("mopt program format version ", version, " is not supported (this runtime reads ",
                    kMinFormatVersion, " to ", kFormatVersion, "); recompile the model"));
  flags_ = read_u32(base + 12);
  uint64_t json_off = read_u64(base + 16), json_size = read_u64(base + 24);
  uint64_t blob_off = read_u64(base + 32), blob_size = read_u64(base + 40);
  if (json_off < kHeaderSize || json_off > size || json_size > size - json_off)
    invalid("mopt program is truncated or corrupt: the JSON section lies outside the file");
  if (blob_off % 64 != 0) invalid("mopt program is corrupt: weight blob is not 64-byte aligned");
  if (blob_off > size || blob_size > size - blob_off)
    invalid(str_cat("mopt program is truncated: the weight blob needs ", blob_off + blob_size,
                    " bytes, the file has ", size));
  blob_ = base + blob_off;
  blob_size_ = blob_size;
  doc_ = Json::parse(reinterpret_cast<const char*>(base + json_off), json_size);
  if (const Json* isa = doc_.find("isa")) packed_isa_ = isa->as_string("isa");
  parse_graph(doc_.at("graph"), &graph_);
}

void Program::parse_graph(const Json& g, GraphInfo* out) const {
  const auto& values = g.at("values").as_array("values");
  out->values.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const Json& vj = values[i];
    ValueInfo& v = out->values[i];
    v.name = vj.at("name").as_string("value name");
    int64_t code = vj.at("dtype").as_int("dtype");
    if (code != 0 && !dtype_known(static_cast<int32_t>(code)))
      invalid(str_cat("value '", v.name, "' has unknown dtype code ", code));
    v.dtype = static_cast<DType>(code);
    if (const Json* s = vj.find("shape"); s && !s->is_null()) parse_dims(*s, &v);
    if (const Json* c = vj.find("const")) {
      ConstInfo ci;
      uint64_t off = static_cast<uint64_t>(c->at("offset").as_int("const offset"));
      uint64_t nbytes = static_cast<uint64_t>(c->at("nbytes").as_int("const nbytes"));
      if (off % 64 != 0 || off > blob_size_ || nbytes > blob_size_ - off)
        invalid(str_cat("constant '", v.name, "' lies outside the weight blob (offset ", off, ", ",
                        nbytes, " bytes, blob ", blob_size_, ")"));
      if (!v.has_shape) invalid(str_cat("constant '", v.name, "' has no shape"));
      ci.tensor.dtype = v.dtype;
      for (const Dim& d : v.dims) {
        if (d.size < 0) invalid(str_cat("constant '", v.name, "' has a symbolic dimension"));
        if (d.size > 0 && ci.tensor.numel() > std::numeric_limits<int64_t>::max() / d.size)
          invalid(str_cat("constant '", v.name, "' is too large"));
        ci.tensor.shape.push_back(d.size);
      }
      if (const Json* f = c->find("format")) ci.format = f->as_string("const format");
      if (const Json* st = c->find("storage")) {
        const std::string storage = st->as_string("const storage");
        if (storage != "f16")
          invalid(str_cat("constant '", v.name, "' has unknown storage '", storage, "' (this runtime reads 'f16')"));
        if (v.dtype != DType::kF32)
          invalid(str_cat("constant '", v.name, "' is stored as float16 but is ", dtype_name(v.dtype),
                          " (only float32 constants may be)"));
        if (nbytes % 2 != 0) invalid(str_cat("constant '", v.name, "' is stored as float16 in an odd number of bytes"));
        ci.f16 = true;
      }
      const size_t want = ci.f16 ? ci.tensor.nbytes() / 2 : ci.tensor.nbytes();
      if (ci.format.empty() && nbytes != want)
        invalid(str_cat("constant '", v.name, "' has ", nbytes, " bytes; its shape ",
                        shape_str(ci.tensor.shape), " of ", ci.f16 ? "float16-stored " : "", dtype_name(v.dtype),
                        " needs ", want));
      ci.tensor.data = const_cast<uint8_t*>(blob_ + off);
      ci.nbytes = nbytes;
      v.const_index = static_cast<int>(out->consts.size());
      out->consts.push_back(std::move(ci));
    }
  }
  auto ids = [&](const Json& arr, const char* what, bool allow_absent) {
    std::vector<int> r;
    for (const Json& x : arr.as_array(what)) {
      int64_t id = x.as_int(what);
      if (id == -1 && allow_absent) { r.push_back(-1); continue; }
      if (id < 0 || id >= static_cast<int64_t>(values.size()))
        invalid(str_cat("program refers to value id ", id, " in ", what, "; there are ", values.size()));
      r.push_back(static_cast<int>(id));
    }
    return r;
  };
  out->inputs = ids(g.at("inputs"), "graph inputs", false);
  out->outputs = ids(g.at("outputs"), "graph outputs", false);
  std::vector<bool> defined(values.size(), false);
  for (int id : out->inputs) defined[id] = true;
  for (size_t i = 0; i < values.size(); ++i)
    if (out->values[i].const_index >= 0) defined[i] = true;
  for (const Json& nj : g.at("nodes").as_array("nodes")) {
    NodeInfo n;
    n.name = nj.at("name").as_string("node name");
    n.op = nj.at("op").as_string("node op");
    if (const Json* d = nj.find("domain")) n.domain = d->as_string("node domain");
    n.attrs = nj.find("attrs");
    if (n.attrs) n.attrs->as_object("node attrs");
    n.inputs = ids(nj.at("inputs"), "node inputs", true);
    n.outputs = ids(nj.at("outputs"), "node outputs", true);
    for (int id : n.inputs)
      if (id >= 0 && !defined[id] && !nj.has("outer_scope"))
        invalid(str_cat("node '", n.name, "' (", n.op, ") reads value '", out->values[id].name,
                        "' before anything defines it"));
    for (int id : n.outputs) {
      if (id < 0) continue;
      if (defined[id])
        invalid(str_cat("node '", n.name, "' (", n.op, ") redefines value '", out->values[id].name, "'"));
      defined[id] = true;
    }
    out->nodes.push_back(std::move(n));
  }
  for (int id : out->outputs)
    if (!defined[id]) invalid(str_cat("graph output '", out->values[id].name, "' is never computed"));
}

}  // namespace mopt
