// Sessions: run with the GIL released; nodes without a native kernel call back into Python.
#include <chrono>

#include "bindings/common.h"
#include "mopt/session.h"
#include "mopt/status.h"

namespace mopt::bindings {

py::tuple value_description(const ValueInfo& v);

namespace {

// A node run by a Python callable: runner([(uint8 view, dtype code, shape), ...]) returns a list
// of (uint8 array, shape, dtype code) per output.
class PyKernel final : public Kernel {
 public:
  explicit PyKernel(py::object runner) : runner_(std::move(runner)) { impl = "python-fallback"; }
  ~PyKernel() override {
    py::gil_scoped_acquire gil;
    runner_ = py::object();
  }

  void run(KernelContext& ctx) override {
    py::gil_scoped_acquire gil;
    try {
      py::list args;
      for (int i = 0; i < ctx.num_inputs(); ++i) {
        const Tensor* t = ctx.input(i);
        if (!t) {
          args.append(py::none());
          continue;
        }
        py::list shape;
        for (int64_t d : t->shape) shape.append(d);
        args.append(py::make_tuple(bytes_array(t->data, t->nbytes(), py::none()), static_cast<int>(t->dtype), shape));
      }
      py::list outs = runner_(args);
      if (static_cast<int>(outs.size()) != ctx.num_outputs())
        fail(ErrorCode::kRuntime, "fallback returned ", outs.size(), " outputs, expected ", ctx.num_outputs());
      for (int i = 0; i < ctx.num_outputs(); ++i) {
        if (!ctx.output_used(i)) continue;
        py::tuple o = outs[i];
        py::array bytes = o[0];
        Shape shape;
        for (auto d : py::list(o[1])) shape.push_back(d.cast<int64_t>());
        Tensor& y = ctx.output(i, shape, static_cast<DType>(o[2].cast<int>()));
        if (static_cast<size_t>(bytes.nbytes()) != y.nbytes())
          fail(ErrorCode::kRuntime, "fallback output ", i, " has ", bytes.nbytes(), " bytes, expected ", y.nbytes(),
               " (", dtype_name(y.dtype), " ", shape_str(shape), ")");
        if (y.nbytes()) std::memcpy(y.data, bytes.data(), y.nbytes());
      }
    } catch (py::error_already_set& e) {
      std::string msg = e.what();
      fail(ErrorCode::kRuntime, "the Python fallback failed: ", msg);
    }
  }

 private:
  py::object runner_;
};

struct PySession {
  std::shared_ptr<Program> program;
  std::unique_ptr<Session> session;
};

}  // namespace

void bind_session(py::module_& m) {
  py::class_<PySession>(m, "Session")
      .def(py::init([](std::shared_ptr<Program> program, int threads, std::string isa, py::object fallback) {
             SessionOptions opts;
             opts.intra_op_threads = threads;
             if (isa.empty()) {
               opts.isa = default_isa();
             } else if (!parse_isa(isa, &opts.isa)) {
               throw Error(ErrorCode::kInvalidArgument,
                           str_cat("isa '", isa, "' is not one of scalar, avx2, avx512, neon"));
             }
             if (!fallback.is_none()) {
               opts.external = [fallback](const KernelInit& init) -> std::unique_ptr<Kernel> {
                 py::gil_scoped_acquire gil;
                 const Json* model = init.attrs.get("onnx");
                 if (!model)
                   fail(ErrorCode::kUnsupported, "no native kernel for this op, and the node carries no ONNX "
                                                 "definition for the fallback");
                 try {
                   py::object runner = fallback(init.node->name, model->as_string("onnx"));
                   return std::make_unique<PyKernel>(runner);
                 } catch (py::error_already_set& e) {
                   std::string msg = e.what();
                   fail(ErrorCode::kUnsupported, "the Python fallback cannot run this node: ", msg);
                 }
               };
             }
             auto s = std::make_unique<PySession>();
             s->program = program;
             {
               py::gil_scoped_release nogil;
               s->session = std::make_unique<Session>(program, std::move(opts));
             }
             return s;
           }),
           py::arg("program"), py::arg("threads") = 0, py::arg("isa") = "", py::arg("fallback") = py::none())
      .def("inputs",
           [](const PySession& s) {
             py::list out;
             for (int id : s.session->graph().inputs) out.append(value_description(s.session->graph().values[id]));
             return out;
           })
      .def("outputs",
           [](const PySession& s) {
             py::list out;
             for (int id : s.session->graph().outputs) out.append(value_description(s.session->graph().values[id]));
             return out;
           })
      .def("nodes",
           [](const PySession& s) {
             py::list out;
             const auto& nodes = s.session->graph().nodes;
             for (size_t i = 0; i < nodes.size(); ++i)
               out.append(py::make_tuple(nodes[i].name, nodes[i].domain, nodes[i].op, s.session->kernel_impls()[i]));
             return out;
           })
      .def_property_readonly("num_threads", [](const PySession& s) { return s.session->num_threads(); })
      .def_property_readonly("isa", [](const PySession& s) { return std::string(isa_name(s.session->isa())); })
      .def("stats",
           [](const PySession& s) {
             SessionStats st = s.session->stats();
             py::dict d;
             d["runs"] = st.runs;
             d["plans"] = st.plans;
             d["arena_bytes"] = st.arena_bytes;
             d["arena_grows"] = st.arena_grows;
             d["dynamic_allocs"] = st.dynamic_allocs;
             return d;
           })
      .def(
          "run",
          [](PySession& s, py::list feeds, std::vector<int> wanted, bool profile) {
            std::vector<Tensor> ts;
            std::vector<py::array> keep;
            for (auto item : feeds) {
              py::tuple t = item.cast<py::tuple>();
              py::array a = t[0];
              keep.push_back(a);
              ts.push_back(tensor_from_array(a, t[1].cast<int>()));
            }
            std::vector<OwnedTensor> outs;
            std::vector<double> prof;
            {
              py::gil_scoped_release nogil;
              outs = s.session->run(ts, wanted, profile ? &prof : nullptr);
            }
            py::list result;
            for (OwnedTensor& o : outs) {
              auto* holder = new std::shared_ptr<void>(o.owner);
              py::capsule cap(holder, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
              py::list shape;
              for (int64_t d : o.tensor.shape) shape.append(d);
              result.append(py::make_tuple(bytes_array(o.tensor.data, o.tensor.nbytes(), cap),
                                           static_cast<int>(o.tensor.dtype), shape));
            }
            py::object prof_obj = profile ? py::object(py::cast(prof)) : py::object(py::none());
            return py::make_tuple(result, prof_obj);
          },
          py::arg("feeds"), py::arg("wanted"), py::arg("profile") = false);
}

}  // namespace mopt::bindings
