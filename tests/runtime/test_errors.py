"""Bad input raises a clear Python exception that names the problem; nothing crashes the process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mopt
from mopt.errors import InvalidArgumentError, InvalidModelError, MoptError, UnsupportedOpError
from mopt.testing.models import light_path


def _model(nodes: list[onnx.NodeProto], x_shape: list, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 18}).items()])


@pytest.fixture(scope="module")
def relu_session() -> mopt.Session:
    return mopt.Session(_model([helper.make_node("Relu", ["x"], ["y"])], [2, "n"]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not an ONNX model"),
        (b"this is not a model at all" * 8, "is not an ONNX model"),
        (None, "is not an ONNX model"),  # a truncated real model
    ],
    ids=["empty", "text", "truncated"],
)
def test_not_an_onnx_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content if content is not None else light_path("light_resnet50").read_bytes()[:4000])
    with pytest.raises(InvalidModelError, match=message):
        mopt.compile(str(path))
    with pytest.raises(InvalidModelError):
        mopt.Session(str(path))


def test_missing_file() -> None:
    with pytest.raises(InvalidArgumentError, match="no such model file"):
        mopt.Session("/nonexistent/model.onnx")


def test_unsupported_op_with_fallback_disabled_names_the_node() -> None:
    # an ONNX-ML op with no native kernel (the long tail the fallback is for)
    binarizer = helper.make_node("Binarizer", ["h"], ["y"], name="the_bin", domain="ai.onnx.ml", threshold=0.5)
    m = _model([helper.make_node("Relu", ["x"], ["h"]), binarizer], [2, 3, 3], {"": 18, "ai.onnx.ml": 1})
    with pytest.raises(UnsupportedOpError, match=r"'the_bin' \(ai.onnx.ml.Binarizer\)"):
        mopt.compile(m, fallback=False)
    with pytest.raises(UnsupportedOpError, match="the_bin"):
        mopt.Session(m, fallback=False)
    # with the fallback it runs, and the compile report says so
    cm = mopt.compile(m, log=lambda _: None)
    assert [p.op for p in cm.fallback_nodes] == ["ai.onnx.ml.Binarizer"]
    x = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float32)
    (y,) = mopt.Session(cm).run(None, {"x": x})
    np.testing.assert_array_equal(y, (np.maximum(x, 0) > 0.5).astype(np.float32))


@pytest.mark.parametrize(("op", "domain"), [("NoSuchOp", ""), ("Foo", "com.acme")])
def test_unknown_operator_fails_at_compile_time(op: str, domain: str) -> None:
    opsets = {"": 18, **({domain: 1} if domain else {})}
    m = _model([helper.make_node(op, ["x"], ["y"], name="mystery", domain=domain)], [2, 3], opsets)
    with pytest.raises(UnsupportedOpError, match=rf"node 'mystery'.*no operator '{op}'"):
        mopt.compile(m)


def test_wrong_input_name(relu_session: mopt.Session) -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown input 'z'.*'x' \(float32"):
        relu_session.run(None, {"z": np.ones((2, 3), np.float32)})


def test_missing_input(relu_session: mopt.Session) -> None:
    with pytest.raises(InvalidArgumentError, match="missing input 'x'"):
        relu_session.run(None, {})


def test_wrong_dtype(relu_session: mopt.Session) -> None:
    with pytest.raises(InvalidArgumentError, match="expects float32, got float64"):
        relu_session.run(None, {"x": np.ones((2, 3), np.float64)})


@pytest.mark.parametrize(("shape", "message"), [((3, 3), "dimension 0 must be 2"), ((6,), "expects rank 2")], ids=["dim", "rank"])
def test_wrong_shape(relu_session: mopt.Session, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        relu_session.run(None, {"x": np.ones(shape, np.float32)})


def test_wrong_output_name_and_type(relu_session: mopt.Session) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown output 'q'"):
        relu_session.run(["q"], {"x": np.ones((2, 3), np.float32)})
    with pytest.raises(InvalidArgumentError, match="list of names"):
        relu_session.run("y", {"x": np.ones((2, 3), np.float32)})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="dict of name"):
        relu_session.run(None, [np.ones((2, 3), np.float32)])  # type: ignore[arg-type]


def test_shape_error_inside_the_graph_names_the_node() -> None:
    """Shapes that only disagree at run time: the kernel's check names the node and the shapes."""
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"], name="the_add")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a"]), helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    sess = mopt.Session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(MoptError, match=r"node 'the_add' \(Add\).*broadcast"):
        sess.run(None, {"x": np.ones(3, np.float32), "z": np.ones(4, np.float32)})
    # the session is still usable afterwards
    (y,) = sess.run(None, {"x": np.ones(3, np.float32), "z": np.ones(1, np.float32)})
    np.testing.assert_array_equal(y, np.full(3, 2, np.float32))


def test_bad_level_and_isa() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [2])
    with pytest.raises(InvalidArgumentError, match="optimization level"):
        mopt.compile(m, 7)
    with pytest.raises(InvalidArgumentError, match="isa 'sse9'"):
        mopt.compile(m, isa="sse9")


def test_invalid_graph_is_reported() -> None:
    """A node reading a value nobody produces."""
    m = _model([helper.make_node("Add", ["x", "ghost"], ["y"])], [2])
    with pytest.raises(InvalidModelError, match="ghost"):
        mopt.compile(m)
