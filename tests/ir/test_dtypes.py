"""Element types: DType codes are ONNX's TensorProto codes; mapping to and from numpy agrees with
onnx.helper; names and ONNX Runtime type strings; errors for types mopt cannot hold."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mopt.ir import DType
from mopt.ir.dtypes import c_contiguous, from_numpy, is_float, name, onnx_type_string, to_numpy

ml_dtypes = pytest.importorskip("ml_dtypes")
CODES = [d for d in DType if d != DType.UNDEFINED]


@pytest.mark.parametrize("dtype", list(DType), ids=[d.name for d in DType])
def test_codes_are_onnx_codes(dtype: DType) -> None:
    assert getattr(TensorProto, dtype.name) == int(dtype)
    assert TensorProto.DataType.Name(int(dtype)) == dtype.name


@pytest.mark.parametrize("dtype", CODES, ids=[d.name for d in CODES])
def test_numpy_round_trip_agrees_with_onnx(dtype: DType) -> None:
    np_dtype = to_numpy(dtype)
    assert np_dtype == helper.tensor_dtype_to_np_dtype(int(dtype))
    assert from_numpy(np_dtype) is dtype
    assert from_numpy(np_dtype.type) is dtype, "a scalar type works as well as a dtype"


@pytest.mark.parametrize(
    ("np_dtype", "dtype"),
    [
        (np.float32, DType.FLOAT),
        (np.bool_, DType.BOOL),
        ("int64", DType.INT64),
        (ml_dtypes.bfloat16, DType.BFLOAT16),
        (np.dtype("<U5"), DType.STRING),
        (np.dtype("S3"), DType.STRING),
        (object, DType.STRING),
    ],
)
def test_from_numpy(np_dtype: object, dtype: DType) -> None:
    assert from_numpy(np_dtype) is dtype  # type: ignore[arg-type]


@pytest.mark.parametrize("np_dtype", ["datetime64[s]", "timedelta64[s]", "V4", np.dtype([("a", np.int32)])])
def test_from_numpy_refuses_other_types(np_dtype: object) -> None:
    with pytest.raises(TypeError, match="has no ONNX element type"):
        from_numpy(np_dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [0, 99, -1])
def test_to_numpy_refuses_unknown_codes(code: int) -> None:
    with pytest.raises(TypeError, match="no numpy type for element type"):
        to_numpy(code)


@pytest.mark.parametrize(
    ("dtype", "text", "ort"),
    [
        (DType.FLOAT, "float32", "tensor(float)"),
        (DType.DOUBLE, "float64", "tensor(double)"),
        (DType.FLOAT16, "float16", "tensor(float16)"),
        (DType.BFLOAT16, "bfloat16", "tensor(bfloat16)"),
        (DType.INT64, "int64", "tensor(int64)"),
        (DType.UINT8, "uint8", "tensor(uint8)"),
        (DType.BOOL, "bool", "tensor(bool)"),
        (DType.STRING, "string", "tensor(string)"),
        (DType.FLOAT8E4M3FN, "float8_e4m3fn", "tensor(float8e4m3fn)"),
        (DType.UNDEFINED, "undefined", "tensor(undefined)"),
    ],
)
def test_names(dtype: DType, text: str, ort: str) -> None:
    assert name(dtype) == text
    assert name(int(dtype)) == text
    assert onnx_type_string(dtype) == ort


def test_name_of_an_unknown_code() -> None:
    assert name(99) == "dtype(99)"


def test_is_float() -> None:
    floats = {d for d in DType if is_float(d)}
    assert {DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT8E5M2} <= floats
    assert not floats & {DType.INT8, DType.INT64, DType.BOOL, DType.STRING, DType.UINT4, DType.COMPLEX64, DType.UNDEFINED}
    assert all(np.issubdtype(to_numpy(d), np.floating) or to_numpy(d).itemsize <= 2 for d in floats)


def test_c_contiguous_keeps_shape() -> None:
    scalar = np.array(3.0, np.float32)
    assert c_contiguous(scalar).shape == ()
    assert c_contiguous(scalar) is scalar
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T
    c = c_contiguous(t)
    assert c.flags.c_contiguous
    assert c.shape == (3, 2)
    np.testing.assert_array_equal(c, t)
