"""Element types. The codes are ONNX TensorProto.DataType values, shared with the C++ runtime."""

from __future__ import annotations

import enum

import numpy as np

try:  # bfloat16, float8 and int4 arrays (optional; onnx depends on it in recent versions)
    import ml_dtypes as _mld
except ImportError:  # pragma: no cover - depends on the environment
    _mld = None


class DType(enum.IntEnum):
    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @classmethod
    def _missing_(cls, value: object) -> DType:
        from mopt.errors import InvalidModelError  # a ValueError, as Enum lookups raise

        raise InvalidModelError(f"tensor element type {value!r} is not an ONNX type mopt knows (1..26)")


_NUMPY = {
    DType.FLOAT: np.dtype(np.float32),
    DType.UINT8: np.dtype(np.uint8),
    DType.INT8: np.dtype(np.int8),
    DType.UINT16: np.dtype(np.uint16),
    DType.INT16: np.dtype(np.int16),
    DType.INT32: np.dtype(np.int32),
    DType.INT64: np.dtype(np.int64),
    DType.STRING: np.dtype(object),
    DType.BOOL: np.dtype(np.bool_),
    DType.FLOAT16: np.dtype(np.float16),
    DType.DOUBLE: np.dtype(np.float64),
    DType.UINT32: np.dtype(np.uint32),
    DType.UINT64: np.dtype(np.uint64),
    DType.COMPLEX64: np.dtype(np.complex64),
    DType.COMPLEX128: np.dtype(np.complex128),
}
if _mld is not None:
    for _code, _name in [
        (DType.BFLOAT16, "bfloat16"),
        (DType.FLOAT8E4M3FN, "float8_e4m3fn"),
        (DType.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
        (DType.FLOAT8E5M2, "float8_e5m2"),
        (DType.FLOAT8E5M2FNUZ, "float8_e5m2fnuz"),
        (DType.UINT4, "uint4"),
        (DType.INT4, "int4"),
        (DType.FLOAT4E2M1, "float4_e2m1fn"),
        (DType.FLOAT8E8M0, "float8_e8m0fnu"),
        (DType.UINT2, "uint2"),
        (DType.INT2, "int2"),
    ]:
        if hasattr(_mld, _name):
            _NUMPY[_code] = np.dtype(getattr(_mld, _name))

_FROM_NUMPY = {v: k for k, v in _NUMPY.items()}

_ONNX_NAMES = {
    DType.FLOAT: "float",
    DType.DOUBLE: "double",
    DType.FLOAT16: "float16",
    DType.BFLOAT16: "bfloat16",
    DType.BOOL: "bool",
    DType.STRING: "string",
}


def to_numpy(dtype: int) -> np.dtype:
    """The numpy dtype holding elements of `dtype`."""
    try:
        return _NUMPY[DType(dtype)]
    except (KeyError, ValueError):
        raise TypeError(f"no numpy type for element type {name(dtype)} (install ml_dtypes?)") from None


def from_numpy(dtype: np.dtype | type) -> DType:
    """The element type of a numpy dtype; raises TypeError for types mopt cannot hold."""
    d = np.dtype(dtype)
    if d.kind in "US":
        return DType.STRING
    try:
        return _FROM_NUMPY[d]
    except KeyError:
        raise TypeError(f"numpy dtype {d} has no ONNX element type") from None


def name(dtype: int) -> str:
    """numpy-style name: 'float32', 'int64', 'bfloat16', ..."""
    try:
        d = DType(dtype)
    except ValueError:
        return f"dtype({dtype})"
    if d in _NUMPY and d != DType.STRING:
        return str(_NUMPY[d])
    return d.name.lower()


def onnx_type_string(dtype: int) -> str:
    """The ONNX Runtime style type string: 'tensor(float)', 'tensor(int64)'."""
    d = DType(dtype)
    base = _ONNX_NAMES.get(d, d.name.lower())
    return f"tensor({base})"


def is_float(dtype: int) -> bool:
    return DType(dtype) in (
        DType.FLOAT,
        DType.DOUBLE,
        DType.FLOAT16,
        DType.BFLOAT16,
        DType.FLOAT8E4M3FN,
        DType.FLOAT8E4M3FNUZ,
        DType.FLOAT8E5M2,
        DType.FLOAT8E5M2FNUZ,
        DType.FLOAT4E2M1,
        DType.FLOAT8E8M0,
    )


def c_contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray turns 0-d arrays into 1-d)."""
    a = np.asarray(array)
    return a if a.flags.c_contiguous else a.copy(order="C")
