"""model.mopt: round trip, layout (magic, version, aligned blob), corrupt files, packed weights across ISAs."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt.errors import InvalidModelError
from mopt.lower import mopt_format
from mopt.testing.assert_close import assert_close
from mopt.testing.random_inputs import available_isas


def _conv_gemm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    fc = rng.standard_normal((16 * 9 * 9, 10)).astype(np.float32) * 0.05
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 17, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(a, k) for k, a in {"w": w, "b": b, "fc": fc}.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnx.ModelProto]:
    model = _conv_gemm_model()
    path = tmp_path_factory.mktemp("mopt") / "model.mopt"
    cm = mopt.compile(model, 2, log=lambda _: None)
    size = cm.save(str(path))
    assert size == path.stat().st_size
    return path, model


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 3, 17, 17)).astype(np.float32)


def test_header_layout(saved: tuple[Path, onnx.ModelProto]) -> None:
    path, _ = saved
    data = path.read_bytes()
    assert data[:8] == mopt_format.MAGIC
    head = mopt_format.read_header(path)
    assert head["version"] == mopt_format.FORMAT_VERSION
    assert head["blob_offset"] % 64 == 0
    assert head["program"]["graph"]["nodes"], "the JSON program lists the kernel calls"
    assert mopt_format.is_mopt_file(path)


def test_round_trip_runs_like_the_source(saved: tuple[Path, onnx.ModelProto]) -> None:
    path, model = saved
    from mopt.testing.reference import run_reference

    x = _x()
    (want,) = run_reference(model, {"x": x})
    (from_file,) = mopt.Session(str(path)).run(None, {"x": x})
    (from_bytes,) = mopt.Session(path.read_bytes()).run(None, {"x": x})
    assert_close(from_file, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(from_file, from_bytes)


def test_loading_needs_no_protobuf(saved: tuple[Path, onnx.ModelProto]) -> None:
    """The C++ loader reads the file itself; the onnx package is not consulted."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['onnx'] = None; sys.modules['google.protobuf'] = None\n"
        "import numpy as np, mopt\n"
        f"s = mopt.Session({str(saved[0])!r})\n"
        "print(s.run(None, {'x': np.ones((1, 3, 17, 17), np.float32)})[0].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 10)"


@pytest.mark.parametrize("cut", [0, 7, 16, 40, -1, "json"])
def test_truncated_files_are_rejected(saved: tuple[Path, onnx.ModelProto], tmp_path: Path, cut: int | str) -> None:
    data = saved[0].read_bytes()
    head = mopt_format.read_header(saved[0])
    n = head["json_offset"] + head["json_size"] // 2 if cut == "json" else (len(data) + cut if cut == -1 else cut)
    bad = tmp_path / "bad.mopt"
    bad.write_bytes(data[: int(n)])
    with pytest.raises(InvalidModelError):
        mopt.Session(str(bad))


@pytest.mark.parametrize("field", ["version", "json_offset", "blob_offset", "json"])
def test_corrupt_headers_are_rejected(saved: tuple[Path, onnx.ModelProto], tmp_path: Path, field: str) -> None:
    data = bytearray(saved[0].read_bytes())
    head = mopt_format.read_header(saved[0])
    if field == "version":
        data[8:12] = (999).to_bytes(4, "little")
    elif field == "json":
        data[head["json_offset"] : head["json_offset"] + 8] = b"{{{{{{{{"
    else:  # u64 fields at their documented offsets
        off = {"json_offset": 16, "blob_offset": 32}[field]
        data[off : off + 8] = (1 << 60).to_bytes(8, "little")
    bad = tmp_path / "bad.mopt"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidModelError):
        mopt.Session(str(bad))


@pytest.mark.parametrize("pack_isa", ["scalar", "avx2", "avx512"])
def test_weights_packed_for_one_isa_run_on_every_other(pack_isa: str, isa: str, tmp_path: Path) -> None:
    if pack_isa not in available_isas():
        pytest.skip(f"{pack_isa} not available")
    model = _conv_gemm_model()
    path = tmp_path / "m.mopt"
    mopt.compile(model, 2, isa=pack_isa, log=lambda _: None).save(str(path))
    x = _x(1)
    (want,) = mopt.Session(model, level=0, isa=isa).run(None, {"x": x})
    sess = mopt.Session(str(path), isa=isa)
    (got,) = sess.run(None, {"x": x})
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    if pack_isa == isa:  # packed for this very micro-kernel: used in place from the mapping
        impls = " ".join(impl for _, _, impl in sess.kernels())
        assert "prepacked" in impls, impls


def test_bfloat16_and_empty_constants_round_trip(tmp_path: Path) -> None:
    # constants kept as is (-O0) land in the blob as raw bytes, whatever their element type or size

    c = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    empty = np.zeros((0, 3), np.float32)
    g = helper.make_graph(
        [
            helper.make_node("Cast", ["c"], ["cf"], to=1),
            helper.make_node("Add", ["x", "cf"], ["y"]),
            helper.make_node("Concat", ["x2", "e"], ["z"], axis=0),
        ],
        "g",
        [helper.make_tensor_value_info("x", 1, [3]), helper.make_tensor_value_info("x2", 1, [2, 3])],
        [helper.make_tensor_value_info("y", 1, [3]), helper.make_tensor_value_info("z", 1, [2, 3])],
        initializer=[numpy_helper.from_array(c, "c"), numpy_helper.from_array(empty, "e")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    path = tmp_path / "m.mopt"
    mopt.compile(m, 0).save(str(path))
    x, x2 = np.ones(3, np.float32), np.ones((2, 3), np.float32)
    y, z = mopt.Session(str(path)).run(None, {"x": x, "x2": x2})
    np.testing.assert_array_equal(y, x + c.astype(np.float32))
    np.testing.assert_array_equal(z, x2)
