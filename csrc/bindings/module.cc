// mopt._C: the native runtime. Submodules only; each area binds itself (bind_*.cc).
#include "bindings/common.h"
#include "mopt/status.h"

namespace mopt::bindings {

Tensor tensor_from_array(const py::array& a, int code) {
  if (!(a.flags() & py::array::c_style))
    throw Error(ErrorCode::kInternal, "array passed to the runtime is not C-contiguous");
  Tensor t;
  t.dtype = static_cast<DType>(code);
  for (py::ssize_t i = 0; i < a.ndim(); ++i) t.shape.push_back(static_cast<int64_t>(a.shape(i)));
  t.data = const_cast<void*>(a.data());
  if (static_cast<size_t>(a.nbytes()) != t.nbytes())
    throw Error(ErrorCode::kInternal, str_cat("array of ", a.nbytes(), " bytes does not hold ", t.numel(), " ",
                                              dtype_name(t.dtype)));
  return t;
}

py::array bytes_array(void* data, size_t nbytes, py::object owner) {
  return py::array(py::dtype("uint8"), {static_cast<py::ssize_t>(nbytes)}, {1}, data, owner);
}

}  // namespace mopt::bindings

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "mopt native runtime";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mopt::Error& e) {
      const char* cls = "MoptError";
      switch (e.code()) {
        case mopt::ErrorCode::kInvalidModel: cls = "InvalidModelError"; break;
        case mopt::ErrorCode::kInvalidArgument: cls = "InvalidArgumentError"; break;
        case mopt::ErrorCode::kUnsupported: cls = "UnsupportedOpError"; break;
        case mopt::ErrorCode::kRuntime: cls = "ExecutionError"; break;
        case mopt::ErrorCode::kInternal: cls = "InternalError"; break;
      }
      py::object type = py::module_::import("mopt.errors").attr(cls);
      PyErr_SetString(type.ptr(), e.what());
    }
  });
  mopt::bindings::bind_program(m);
  mopt::bindings::bind_session(m);
  mopt::bindings::bind_kernels(m);
}
