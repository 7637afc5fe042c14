"""Data-movement ops against onnx.reference: Reshape, Flatten, Squeeze, Unsqueeze, Concat, Transpose,
Shape, ConstantOfShape. Bit-exact; every dtype they take; zero-sized and rank-0 tensors."""

from __future__ import annotations

import numpy as np
import pytest

from mopt.testing.random_inputs import random_input

from .helpers import check_op

OPS_COVERED = ["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Transpose", "Shape", "ConstantOfShape"]

DTYPES = [np.float32, np.int64, np.int32, np.uint8, np.bool_, np.float16]


def rnd(shape: tuple[int, ...], dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return random_input(shape, dtype, seed=seed)


def exact(op: str, inputs: dict, attrs: dict | None = None, **kw) -> None:
    check_op(op, inputs, attrs, rtol=0, atol=0, **kw)


RESHAPES = [
    ((2, 3, 4), [4, -1]),
    ((2, 3, 4), [0, 0, -1]),
    ((2, 3, 4), [24]),
    ((7,), [7, 1, 1]),
    ((1, 17), [-1]),
    ((0, 4), [0, 2, 2]),
    ((3, 0), [3, 0]),
    ((), [1]),
]


@pytest.mark.parametrize(("shape", "spec"), RESHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int64], ids=lambda d: np.dtype(d).name)
def test_reshape(shape: tuple[int, ...], spec: list[int], dtype: type, isa: str) -> None:
    exact("Reshape", {"x": rnd(shape, dtype), "s": np.array(spec, np.int64)}, isa=isa, consts=["s"])


def test_reshape_shape_as_run_time_input(isa: str) -> None:
    exact("Reshape", {"x": rnd((3, 4, 5)), "s": np.array([5, -1, 2], np.int64)}, isa=isa)


def test_reshape_allowzero(isa: str) -> None:
    exact("Reshape", {"x": rnd((0, 3)), "s": np.array([3, 0], np.int64)}, {"allowzero": 1}, isa=isa, consts=["s"])


@pytest.mark.parametrize(
    ("shape", "spec"),
    [((0, 4), [0, -1]), ((2, 3), [4, -1]), ((2, 3), [-1, -1]), ((2, 3), [7]), ((2, 3), [0, 0, 0]), ((2, 3), [-2, 3])],
    ids=str,
)
def test_reshape_impossible_is_a_clear_error(shape: tuple[int, ...], spec: list[int]) -> None:
    import mopt
    from mopt.testing.reference import single_op_model

    m = single_op_model("Reshape", {"x": rnd(shape), "s": np.array(spec, np.int64)}, output_dtypes=[1])
    sess = mopt.Session(mopt.compile(m, 0), fallback=False)
    with pytest.raises(mopt.MoptError, match="Reshape"):
        sess.run(None, {"x": rnd(shape), "s": np.array(spec, np.int64)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -4])
def test_flatten(axis: int, isa: str) -> None:
    exact("Flatten", {"x": rnd((2, 3, 1, 5))}, {"axis": axis}, isa=isa)


@pytest.mark.parametrize(
    ("shape", "axes"), [((1, 3, 1, 5), [0, 2]), ((1, 3, 1, 5), None), ((7, 1), [-1]), ((1,), [0]), ((1, 0, 1), [2])], ids=str
)
def test_squeeze(shape: tuple[int, ...], axes: list[int] | None, isa: str) -> None:
    inputs = {"x": rnd(shape, np.int32), "axes": None if axes is None else np.array(axes, np.int64)}
    exact("Squeeze", inputs, isa=isa, consts=["axes"])


def test_squeeze_opset11_attribute(isa: str) -> None:
    exact("Squeeze", {"x": rnd((1, 3, 1))}, {"axes": [0]}, isa=isa, opset=11)


@pytest.mark.parametrize(("shape", "axes"), [((3, 5), [0]), ((3, 5), [1, -1]), ((), [0]), ((7,), [0, 2, 3]), ((0, 2), [2])], ids=str)
def test_unsqueeze(shape: tuple[int, ...], axes: list[int], isa: str) -> None:
    exact("Unsqueeze", {"x": rnd(shape, np.uint8), "axes": np.array(axes, np.int64)}, isa=isa, consts=["axes"])


def test_unsqueeze_opset11_attribute(isa: str) -> None:
    exact("Unsqueeze", {"x": rnd((3,))}, {"axes": [0, 2]}, isa=isa, opset=11)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("shapes", "axis"),
    [([(2, 3), (2, 5)], 1), ([(1, 7, 4), (3, 7, 4), (2, 7, 4)], 0), ([(2, 3, 4), (2, 3, 1)], -1), ([(0, 3), (2, 3)], 0), ([(17,)], 0)],
    ids=str,
)
def test_concat(dtype: type, shapes: list[tuple[int, ...]], axis: int, isa: str) -> None:
    inputs = {f"x{i}": rnd(s, dtype, seed=i) for i, s in enumerate(shapes)}
    exact("Concat", inputs, {"axis": axis}, isa=isa)


def test_concat_with_constant_input(isa: str) -> None:
    exact("Concat", {"x": rnd((2, 3)), "c": rnd((2, 2), seed=9)}, {"axis": 1}, isa=isa, consts=["c"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("shape", "perm"),
    [
        ((2, 3), None),
        ((2, 3, 4), [0, 2, 1]),
        ((2, 3, 4, 5), [0, 3, 1, 2]),
        ((1, 17, 7, 7), [0, 2, 3, 1]),
        ((33, 65), [1, 0]),
        ((5,), [0]),
        ((0, 3, 2), [2, 0, 1]),
        ((2, 1, 3, 1, 2), [4, 3, 2, 1, 0]),
        ((3, 4, 5), [1, 0, 2]),  # the innermost axis stays: contiguous runs
        ((1, 3, 8, 7, 7), [0, 2, 1, 3, 4]),  # a channel shuffle
    ],
    ids=str,
)
def test_transpose(dtype: type, shape: tuple[int, ...], perm: list[int] | None, isa: str) -> None:
    attrs = {} if perm is None else {"perm": perm}
    exact("Transpose", {"x": rnd(shape, dtype)}, attrs, isa=isa)


@pytest.mark.parametrize(("start", "end"), [(None, None), (1, None), (-2, None), (0, 2), (1, -1), (5, 9)])
def test_shape(start: int | None, end: int | None, isa: str) -> None:
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    exact("Shape", {"x": rnd((2, 0, 7, 1))}, attrs, isa=isa, opset=18)


@pytest.mark.parametrize(
    "value", [None, np.array([2.5], np.float32), np.array([-3], np.int64), np.array([1], np.int32)], ids=["default", "f32", "i64", "i32"]
)
@pytest.mark.parametrize("shape", [[3, 4], [0], [], [1, 1, 7]], ids=str)
def test_constant_of_shape(value: np.ndarray | None, shape: list[int], isa: str) -> None:
    from onnx import numpy_helper

    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    exact("ConstantOfShape", {"s": np.array(shape, np.int64)}, attrs, isa=isa)
