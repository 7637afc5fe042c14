"""--fp16: float32 weights stored as float16 in the program, widened at load, computed in float32.

Checked on every ISA path: the widening row is exact on all 65536 float16 bit patterns; a program
with float16 weights gives what the float32 program gives on the same (float16-rounded) weights;
the program is half the size; bad files and bad flags are sentences, not crashes.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mopt
from mopt import _C
from mopt.cli import main
from mopt.errors import InvalidModelError
from mopt.lower import mopt_format
from mopt.testing.reference import run_reference
from .models import images, mlp, small_cnn


def _rounded(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each float32 initializer of 16+ values rounded through float16 (what --fp16 stores)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= 16:
            init.CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), init.name))
    return m


def dense_cnn(seed: int = 0) -> onnx.ModelProto:
    """small_cnn plus a wide 3x3 Conv (packed weights) and a MatMul with a big B (packed panels)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, s, shape).astype(np.float32), n) for n, shape, s in (
        ("w1", (40, 3, 3, 3), 0.3), ("b1", (40,), 0.1), ("w2", (40, 1, 3, 3), 0.3),
        ("w3", (24, 40, 3, 3), 0.1), ("mm", (24 * 6 * 6, 37), 0.05), ("mb", (37,), 0.1))]
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat"))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=40, strides=[2, 2]),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c3", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "mm"], ["g"]),
        helper.make_node("Add", ["g", "mb"], ["y"]),
    ]
    g = helper.make_graph(nodes, "dense_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 37])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def test_widening_is_exact_for_every_bit_pattern(isa: str) -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = _C.cvt_f16_f32(bits, isa)
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # -0.0 and subnormals too
    # odd lengths: the vector loops' tails
    for n in (0, 1, 7, 9, 15, 17, 33):
        np.testing.assert_array_equal(_C.cvt_f16_f32(bits[1000 : 1000 + n], isa), want[1000 : 1000 + n])


@pytest.mark.parametrize("build", [small_cnn, dense_cnn, mlp], ids=["small_cnn", "dense_cnn", "mlp"])
def test_fp16_program_matches_fp32_on_rounded_weights(build, isa: str) -> None:
    model = build()
    cm = mopt.compile(model, 2, isa=isa, fp16=True, log=lambda _: None)
    assert cm.fp16
    x = images(3, seed=4) if build is not mlp else np.random.default_rng(4).standard_normal((2, 5, 32)).astype(np.float32)
    got = mopt.Session(cm, isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    # the same kernels on the same float16-rounded weights: equal to float32 round-off
    same = mopt.Session(_rounded(model), isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, same, rtol=1e-5, atol=1e-5 * float(np.abs(same).max()))
    # and close to the float32 reference on the original weights (float16 has 11 significant bits)
    want = run_reference(model, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-3 * float(np.abs(want).max()))


def test_fp16_program_is_half_the_size_and_version_2(tmp_path) -> None:
    model = dense_cnn()
    full = mopt.compile(model, 2, log=lambda _: None)
    half = mopt.compile(model, 2, fp16=True, log=lambda _: None)
    a, b = tmp_path / "a.mopt", tmp_path / "b.mopt"
    size_a, size_b = full.save(str(a)), half.save(str(b))
    assert size_b < 0.55 * size_a
    stored = [v["const"] for v in half.program["graph"]["values"] if v.get("const", {}).get("storage") == "f16"]
    assert any("format" in c for c in stored), "prepacked panels are stored as float16 too"
    assert mopt_format.read_header(a)["version"] == mopt_format.FORMAT_VERSION  # older runtimes still read these
    assert mopt_format.read_header(b)["version"] == mopt_format.FORMAT_VERSION_F16
    x = images(2)
    np.testing.assert_array_equal(mopt.Session(str(b), intra_op_threads=2).run(None, {"x": x})[0],
                                  mopt.Session(half, intra_op_threads=2).run(None, {"x": x})[0])


def test_constants_out_of_float16_range_stay_float32() -> None:
    """A -1e9 mask would turn into -inf as float16 (and -inf * 0 into NaN): it stays float32."""
    mask = np.zeros((4, 8), np.float32)
    mask[:, 5:] = -1e9
    nodes = [helper.make_node("Add", ["x", "mask"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                          initializer=[numpy_helper.from_array(mask, "mask")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    cm = mopt.compile(model, 2, fp16=True, log=lambda _: None)
    assert not any(v.get("const", {}).get("storage") for v in cm.program["graph"]["values"])
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    got = mopt.Session(cm).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, run_reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def _patched(data: bytes, edit) -> bytes:
    """The program with its JSON description edited (the blob offset kept)."""
    _, version, flags, json_off, json_size, blob_off, blob_size = mopt_format.HEADER.unpack(data[: mopt_format.HEADER.size])
    prog = json.loads(data[json_off : json_off + json_size])
    edit(prog)
    text = json.dumps(prog, separators=(",", ":")).encode()
    assert json_off + len(text) <= blob_off, "the edit must not grow the JSON past the blob"
    head = mopt_format.HEADER.pack(mopt_format.MAGIC, version, flags, json_off, len(text), blob_off, blob_size)
    return head + text + b" " * (blob_off - json_off - len(text)) + data[blob_off:]


def _first_f16(prog: dict) -> dict:
    return next(v["const"] for v in prog["graph"]["values"] if v.get("const", {}).get("storage") == "f16")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: _first_f16(p).update(storage="f8"), "unknown storage 'f8'"),
    (lambda p: _first_f16(p).update(nbytes=_first_f16(p)["nbytes"] - 1), "odd number of bytes"),
    (lambda p: next(v for v in p["graph"]["values"] if v.get("const", {}).get("storage") == "f16" and "format" not in v["const"])
     .update(dtype=int(TensorProto.INT32)), "only float32 constants"),
])
def test_bad_float16_constants_are_clear_errors(edit, message: str) -> None:
    data = mopt.compile(small_cnn(), 0, fp16=True, log=lambda _: None).to_bytes()
    with pytest.raises(InvalidModelError, match=message):
        mopt.Session(_patched(data, edit))


def test_an_unknown_format_version_is_refused() -> None:
    data = bytearray(mopt.compile(small_cnn(), 2, fp16=True, log=lambda _: None).to_bytes())
    data[8:12] = (3).to_bytes(4, "little")
    with pytest.raises(InvalidModelError, match="format version 3"):
        mopt.Session(bytes(data))


def test_cli_quantize_and_compile_fp16(tmp_path, capsys) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(dense_cnn(), src)
    assert main(["quantize", str(src), "--fp16", "-o", str(tmp_path / "q.mopt")]) == 0
    assert "stored as float16" in capsys.readouterr().out
    assert main(["compile", str(src), "--fp16", "-O3", "-o", str(tmp_path / "c.mopt")]) == 0
    assert "float16" in capsys.readouterr().out
    assert main(["compile", str(src), "-o", str(tmp_path / "f.mopt")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "q.mopt"), "--threads", "1"]) == 0
    assert "stored as float16" in capsys.readouterr().out
    assert (tmp_path / "q.mopt").stat().st_size < 0.55 * (tmp_path / "f.mopt").stat().st_size
    x = images(2)
    want = run_reference(dense_cnn(), {"x": x})[0]
    for name in ("q.mopt", "c.mopt"):
        got = mopt.Session(str(tmp_path / name), intra_op_threads=2).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-3 * float(np.abs(want).max()))


@pytest.mark.parametrize("argv", [
    ["quantize", "M", "--fp16", "--dynamic"],
    ["compile", "M", "--fp16", "--int8", "--calibration", "C"],
    ["quantize", "M", "--fp16", "--calibration", "C"],
    ["compile", "M", "--emit-onnx", "E"],
])
def test_cli_fp16_flag_errors(tmp_path, capsys, argv: list[str]) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    argv = [str(src) if a == "M" else str(tmp_path / a) if a in ("C", "E") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--fp16" in err or "--emit-onnx" in err


def test_emit_onnx_fp16_is_a_standard_model_onnxruntime_runs(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    src, emitted = tmp_path / "cnn.onnx", tmp_path / "cnn.fp16.onnx"
    onnx.save(dense_cnn(), src)
    assert main(["quantize", str(src), "--fp16", "-o", str(tmp_path / "q.mopt"), "--emit-onnx", str(emitted)]) == 0
    model = onnx.load(str(emitted))
    onnx.checker.check_model(model, full_check=True)
    halves = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(halves) == 6 and emitted.stat().st_size < 0.6 * src.stat().st_size
    x = images(2)
    got = ort.InferenceSession(str(emitted), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = mopt.Session(str(tmp_path / "q.mopt"), intra_op_threads=2).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


# -- float16 activations (--fp16-activations) --------------------------------------------------------
def _dtypes(cm) -> dict[str, int]:
    return {v["name"]: v["dtype"] for v in cm.program["graph"]["values"] if "const" not in v}


@pytest.mark.parametrize("build", [small_cnn, dense_cnn, mlp], ids=["small_cnn", "dense_cnn", "mlp"])
def test_fp16_activations_store_values_as_float16_and_stay_close(build, isa: str) -> None:
    model = build()
    cm = mopt.compile(model, 2, isa=isa, fp16_activations=True, log=lambda _: None)
    dt = _dtypes(cm)
    assert sum(1 for d in dt.values() if d == TensorProto.FLOAT16) >= 2, dt
    # inputs and outputs keep their names and float32
    assert dt["x"] == TensorProto.FLOAT and dt[model.graph.output[0].name] == TensorProto.FLOAT
    kernels = mopt.Session(cm, isa=isa, intra_op_threads=2).kernels()
    assert all(not impl.startswith("python") for _, _, impl in kernels), kernels
    x = images(3, seed=4) if build is not mlp else np.random.default_rng(4).standard_normal((2, 5, 32)).astype(np.float32)
    got = mopt.Session(cm, isa=isa, intra_op_threads=2).run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-2 * float(np.abs(want).max()))


def test_fp16_activations_cast_only_at_the_float32_boundaries() -> None:
    """small_cnn: the image is cast once, the float ReduceMean (not a float16 op) reads a cast of
    its input and the Gemm a cast of its output, and the logits are cast back."""
    cm = mopt.compile(small_cnn(), 2, fp16_activations=True, log=lambda _: None)
    nodes = cm.program["graph"]["nodes"]
    casts = [n for n in nodes if n["op"] == "Cast"]
    ops = [n["op"] for n in nodes]
    assert len(casts) == 4, ops
    assert ops[0] == "Cast" and ops[-1] == "Cast"


def test_fp16_activations_halve_the_arena(isa: str) -> None:
    model = dense_cnn()
    x = images(8)
    full = mopt.Session(mopt.compile(model, 2, isa=isa, log=lambda _: None), isa=isa, intra_op_threads=2)
    half = mopt.Session(mopt.compile(model, 2, isa=isa, fp16_activations=True, log=lambda _: None), isa=isa,
                        intra_op_threads=2)
    for s in (full, half):
        for _ in range(2):
            s.run(None, {"x": x})
    assert half.stats()["arena_bytes"] <= 0.6 * full.stats()["arena_bytes"], (half.stats(), full.stats())


def test_fp16_activations_keep_out_of_range_constants_and_shape_arithmetic_float32() -> None:
    """An Add of a -1e9 mask stays float32 (as float16 it would be -inf); the float Mul of a shape
    (Shape -> Cast -> Mul -> Cast: [B, 3000] -> [2B, 1500]) stays float32 (float16 counts exactly only
    to 2048)."""
    mask = np.zeros((4, 3000), np.float32)
    mask[:, 2000:] = -1e9
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Add", ["r", "mask"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("Shape", ["p"], ["shp"]),
        helper.make_node("Cast", ["shp"], ["shp_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["shp_f", "halve"], ["shp_g"]),
        helper.make_node("Cast", ["shp_g"], ["shp_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["p", "shp_i"], ["y"]),
    ]
    g = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(np.array([2.0, 0.5], np.float32), "halve")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    cm = mopt.compile(model, 0, fp16_activations=True, log=lambda _: None)  # -O0: the shape arithmetic stays
    dt = _dtypes(cm)
    assert dt["s"] == TensorProto.FLOAT and dt["shp_g"] == TensorProto.FLOAT, dt
    assert dt["r"] == TensorProto.FLOAT16, dt
    x = np.random.default_rng(0).standard_normal((4, 3000)).astype(np.float32)
    got = mopt.Session(cm).run(None, {"x": x})[0]
    want = run_reference(model, {"x": x})[0]
    assert got.shape == want.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=1e-5)


def test_fp16_activations_flags(tmp_path, capsys) -> None:
    src = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), src)
    assert main(["compile", str(src), "--fp16-activations", "-o", str(tmp_path / "a.mopt")]) == 0
    assert "activations stored as float16" in capsys.readouterr().out
    assert main(["quantize", str(src), "--fp16-activations", "-o", str(tmp_path / "b.mopt")]) == 0
    assert "activations stored as float16" in capsys.readouterr().out
    assert main(["compile", str(src), "--fp16-activations", "--emit-onnx", str(tmp_path / "e.onnx")]) == 2
    assert "--fp16-activations" in capsys.readouterr().err
    from mopt.errors import InvalidArgumentError
    from mopt.quant import quantize

    with pytest.raises(InvalidArgumentError, match="fp16_activations"):
        quantize(small_cnn(), mode="dynamic", fp16_activations=True)


def _overflowing_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> Conv whose middle value reaches ~1e5 (past float16's 65504), scaled back down
    by the second conv, then an Add: as float16 the middle value would be inf."""
    rng = np.random.default_rng(7)
    w1 = np.abs(rng.normal(0, 1, (6, 3, 3, 3))).astype(np.float32) * 20000.0
    w2 = rng.normal(0, 1, (4, 6, 1, 1)).astype(np.float32) * 1e-4
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["big"]),
             helper.make_node("Conv", ["big", "w2"], ["c2"]), helper.make_node("Add", ["c2", "c2"], ["y"])]
    g = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                          initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def test_fp16_activations_with_calibration_keep_out_of_range_values_float32(tmp_path, capsys) -> None:
    from mopt.quant import quantize

    model = _overflowing_cnn()
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    want = run_reference(model, {"x": x})[0]
    blind = quantize(model, mode="fp16", fp16_activations=True, show_progress=False)
    assert not np.isfinite(mopt.Session(blind.compiled).run(None, {"x": x})[0]).all()  # the case this is about
    logs: list[str] = []
    res = quantize(model, {"x": x}, mode="fp16", fp16_activations=True, show_progress=False, log=logs.append)
    assert len(res.skipped) == 1 and "out of float16's range" in logs[0], (res.skipped, logs)
    (big,) = res.skipped  # the fused Conv+Relu's output
    got = mopt.Session(res.compiled).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * float(np.abs(want).max()))
    dtypes = _dtypes(res.compiled)
    assert dtypes[big] == TensorProto.FLOAT and TensorProto.FLOAT16 in dtypes.values(), dtypes
    # the CLI: --calibration goes with --fp16-activations, not with --fp16 alone
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    np.savez(tmp_path / "c.npz", x=x)
    assert main(["quantize", str(src), "--fp16-activations", "--calibration", str(tmp_path / "c.npz"), "--quiet",
                 "-o", str(tmp_path / "m.mopt")]) == 0
    assert "kept float32" in capsys.readouterr().out
    assert main(["quantize", str(src), "--fp16", "--calibration", str(tmp_path / "c.npz")]) == 2
    assert "--fp16-activations" in capsys.readouterr().err
