// A compiled program as loaded from model.mopt: the JSON description, parsed and checked, and
// the weight blob (memory-mapped from the file, or copied when loaded from bytes).
//
// File layout (little-endian):
//   0   char[8] magic "MOPTPROG"
//   8   u32 format version (kFormatVersion)
//   12  u32 flags (bit 0: some nodes need the Python fallback)
//   16  u64 json offset    24 u64 json size
//   32  u64 blob offset    40 u64 blob size      (blob offset is a multiple of 64)
//   48  u64[2] reserved
// Version 2 adds float32 constants stored as float16 ("storage": "f16"); a version 1 runtime
// refuses them rather than read half-width bytes as floats. This runtime reads both.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mopt/json.h"
#include "mopt/tensor.h"

namespace mopt {

constexpr char kMagic[8] = {'M', 'O', 'P', 'T', 'P', 'R', 'O', 'G'};
constexpr uint32_t kFormatVersion = 2;      // the newest this runtime reads
constexpr uint32_t kMinFormatVersion = 1;
constexpr uint32_t kFlagNeedsFallback = 1u;
constexpr size_t kHeaderSize = 64;

// A dimension: a fixed size, or a symbol (size -1) that is bound when the program runs.
struct Dim {
  int64_t size = -1;
  std::string symbol;  // "" for an unnamed dynamic dim
};

struct ValueInfo {
  std::string name;
  DType dtype = DType::kUndefined;
  bool has_shape = false;  // false: rank unknown
  std::vector<Dim> dims;
  int const_index = -1;  // index into Graph::consts, or -1
};

struct ConstInfo {
  Tensor tensor;        // view into the blob (for packed weights: data only, shape logical)
  std::string format;   // "" = plain; otherwise the packer's format tag
  size_t nbytes = 0;
  bool f16 = false;     // float32 data stored as float16 in the blob: the session widens it at load
};

struct NodeInfo {
  std::string name;
  std::string op;
  std::string domain;
  const Json* attrs = nullptr;  // an object (owned by the Program's document)
  std::vector<int> inputs;      // value ids, -1 = absent optional input
  std::vector<int> outputs;     // value ids, -1 = unused optional output
};

struct GraphInfo {
  std::vector<ValueInfo> values;
  std::vector<ConstInfo> consts;
  std::vector<NodeInfo> nodes;
  std::vector<int> inputs;
  std::vector<int> outputs;
};

class Program {
 public:
  static std::shared_ptr<Program> load_file(const std::string& path);
  static std::shared_ptr<Program> load_bytes(const void* data, size_t size);
  ~Program();

  const GraphInfo& graph() const { return graph_; }
  const Json& doc() const { return doc_; }
  uint32_t flags() const { return flags_; }
  const std::string& packed_isa() const { return packed_isa_; }
  size_t blob_size() const { return blob_size_; }

  // Parses a graph description (the main one, or a subgraph attribute) against this blob.
  void parse_graph(const Json& g, GraphInfo* out) const;

 private:
  Program() = default;
  void init(const uint8_t* base, size_t size);

  Json doc_;
  GraphInfo graph_;
  uint32_t flags_ = 0;
  std::string packed_isa_;
  const uint8_t* blob_ = nullptr;
  size_t blob_size_ = 0;
  void* map_ = nullptr;  // mmap region (file) or owned copy (bytes)
  size_t map_size_ = 0;
  bool mapped_ = false;
};

}  // namespace mopt
