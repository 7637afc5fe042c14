// Program loading (file or bytes) and its description.
#include "bindings/common.h"
#include "mopt/program.h"

namespace mopt::bindings {

namespace {

py::list dims_list(const ValueInfo& v) {
  py::list dims;
  for (const Dim& d : v.dims) {
    if (d.size >= 0) dims.append(d.size);
    else if (!d.symbol.empty()) dims.append(d.symbol);
    else dims.append(py::none());
  }
  return dims;
}

}  // namespace

py::tuple value_description(const ValueInfo& v) {
  return py::make_tuple(v.name, static_cast<int>(v.dtype), v.has_shape ? py::object(dims_list(v)) : py::none());
}

void bind_program(py::module_& m) {
  py::class_<Program, std::shared_ptr<Program>>(m, "Program")
      .def_static("from_file", &Program::load_file, py::arg("path"), "Map a .mopt file.")
      .def_static(
          "from_bytes",
          [](py::bytes data) {
            std::string_view sv = data;
            return Program::load_bytes(sv.data(), sv.size());
          },
          py::arg("data"), "Load a program from bytes (copied into aligned memory).")
      .def_property_readonly("flags", &Program::flags)
      .def_property_readonly("packed_isa", &Program::packed_isa)
      .def_property_readonly("blob_size", &Program::blob_size)
      .def_property_readonly("num_nodes", [](const Program& p) { return p.graph().nodes.size(); })
      .def("inputs",
           [](const Program& p) {
             py::list out;
             for (int id : p.graph().inputs) out.append(value_description(p.graph().values[id]));
             return out;
           })
      .def("outputs", [](const Program& p) {
        py::list out;
        for (int id : p.graph().outputs) out.append(value_description(p.graph().values[id]));
        return out;
      });
}

}  // namespace mopt::bindings
