// Shared by the binding files: the submodule entry points and the error translation.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "mopt/tensor.h"

namespace mopt::bindings {

namespace py = pybind11;

void bind_program(py::module_& m);
void bind_session(py::module_& m);
void bind_kernels(py::module_& m);

// A tensor view of a C-contiguous numpy array whose dtype code the caller supplies.
Tensor tensor_from_array(const py::array& a, int code);

// A flat uint8 numpy array over `nbytes` at `data`, keeping `owner` alive.
py::array bytes_array(void* data, size_t nbytes, py::object owner);

}  // namespace mopt::bindings
