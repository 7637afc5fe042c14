// The kernel registry as seen from Python: which ops are native, ahead-of-time weight packing,
// and what this CPU can run.
#include "bindings/common.h"
#include <chrono>

#include "kernels/cpu/isa_fns.h"
#include "mopt/cpu_features.h"
#include "mopt/registry.h"
#include "mopt/json.h"
#include "mopt/kernel.h"
#include "mopt/status.h"
#include "runtime/f16_adapter.h"

#include <algorithm>

namespace mopt::bindings {

void bind_kernels(py::module_& m) {
  m.def("native_ops", [] {
    py::list out;
    for (const OpDef& d : op_registry().all()) {
      py::list dts;
      for (DType t : d.dtypes) dts.append(static_cast<int>(t));
      if (f16_via_f32(d) && std::find(d.dtypes.begin(), d.dtypes.end(), DType::kF16) == d.dtypes.end())
        dts.append(static_cast<int>(DType::kF16));  // through the float32 kernel (runtime/f16_adapter.h)
      out.append(py::make_tuple(d.domain, d.op, dts));
    }
    return out;
  }, "(domain, op, supported first-input dtype codes or [] for any) per native kernel.");

  m.def(
      "prepack",
      [](const std::string& domain, const std::string& op, const std::string& attrs_json, int input,
         py::array w, int code, const std::string& isa_name_) -> py::object {
        const OpDef* def = op_registry().find(domain, op);
        if (!def || !def->prepack) return py::none();
        Isa isa;
        if (!parse_isa(isa_name_, &isa)) throw Error(ErrorCode::kInvalidArgument, "unknown isa " + isa_name_);
        Json attrs = Json::parse(attrs_json.data(), attrs_json.size());
        Tensor t = tensor_from_array(w, code);
        PackedWeight pw;
        if (!def->prepack(Attrs(&attrs), input, t, isa, &pw)) return py::none();
        return py::make_tuple(py::bytes(reinterpret_cast<const char*>(pw.bytes.data()), pw.bytes.size()), pw.format);
      },
      py::arg("domain"), py::arg("op"), py::arg("attrs_json"), py::arg("input"), py::arg("array"), py::arg("dtype"),
      py::arg("isa"), "Pack a constant input for the kernel that will read it; None when it is not packed.");

  m.def(
      "measure_peak",
      [](const std::string& isa_name_, double seconds) {
        Isa isa;
        if (!parse_isa(isa_name_, &isa) || !isa_supported(isa))
          throw Error(ErrorCode::kInvalidArgument, "isa '" + isa_name_ + "' is not available here");
        Isa chosen = Isa::kScalar;
        const void* row = kernel_table().find("fma_probe", isa, &chosen);
        if (!row || chosen != isa)
          throw Error(ErrorCode::kInvalidArgument, "no FMA probe for isa '" + isa_name_ + "' (vector ISAs only)");
        auto probe = reinterpret_cast<cpu::FmaProbeFn>(const_cast<void*>(row));
        py::dict d;
        {
          py::gil_scoped_release nogil;
          probe(1 << 16);  // warm up: the clock ramps, wide units power on
          int64_t iters = 1 << 20;
          double flops = 0, elapsed = 0;
          for (;;) {
            const auto t0 = std::chrono::steady_clock::now();
            flops = probe(iters);
            elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (elapsed >= seconds || iters > (int64_t(1) << 40)) break;
            iters *= 2;
          }
          const double clock = measure_clock_hz(seconds);
          py::gil_scoped_acquire gil;
          d["fma_gflops"] = flops / elapsed / 1e9;
          d["clock_ghz"] = clock / 1e9;
        }
        return d;
      },
      py::arg("isa"), py::arg("seconds") = 0.2,
      "One core's measured fp32 FMA throughput (GFLOP/s) on an ISA's vectors, and the measured clock (GHz, 0 where "
      "it cannot be measured).");

  m.def(
      "cvt_f16_f32",
      [](py::array_t<uint16_t, py::array::c_style | py::array::forcecast> bits, const std::string& isa_name_) {
        Isa isa;
        if (!parse_isa(isa_name_, &isa) || !isa_supported(isa))
          throw Error(ErrorCode::kInvalidArgument, "isa '" + isa_name_ + "' is not available here");
        auto cvt = kernel_table().get<cpu::CvtF16F32Fn>("cvt_f16_f32", isa);
        py::array_t<float> out(bits.size());
        cvt(bits.data(), out.mutable_data(), static_cast<int64_t>(bits.size()));
        return out;
      },
      py::arg("bits"), py::arg("isa"),
      "float16 bit patterns (uint16) widened to float32 by an ISA's row, as a session widens float16-stored weights.");

  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (Isa i : available_isas()) out.push_back(isa_name(i));
    return out;
  });
  m.def("host_isa", [] { return std::string(isa_name(host_isa())); });
  m.def("default_isa", [] { return std::string(isa_name(default_isa())); });
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw;
    d["avx512dq"] = f.avx512dq;
    d["avx512vl"] = f.avx512vl;
    d["avx512vnni"] = f.avx512vnni;
    d["avx512bf16"] = f.avx512bf16;
    d["avx_vnni"] = f.avx_vnni;
    d["neon"] = f.neon;
    d["logical_cores"] = f.logical_cores;
    return d;
  });
}

}  // namespace mopt::bindings
