"""The int8 kernels against numpy int64 references, on every ISA path.

The reference reproduces the kernels' arithmetic: an exact int32 accumulator (zero points
subtracted, the float bias rounded into accumulator units), then one float32 multiply by the
per-channel scale and, for uint8 outputs, round-half-even, zero point and clamp. The integer path
must therefore match exactly; requantized outputs may differ by one step only where float32
rounding of the product falls on a tie (allowed: 1 LSB on < 0.1% of the elements).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from .native import run_native

OPS_COVERED = ["QuantizeLinear", "DequantizeLinear", "com.mopt.QConv", "com.mopt.QMatMul", "com.mopt.QMaxPool"]

U8, F32 = TensorProto.UINT8, TensorProto.FLOAT


def _epilogue(acc: np.ndarray, unit: np.ndarray, out_u8: bool, y_scale: float, y_zp: int, act: tuple[float, float] | None) -> np.ndarray:
    """acc: int64 accumulators with the rounded bias added, channel axis broadcast via `unit`."""
    lo_f, hi_f = act if act else (-np.inf, np.inf)
    if out_u8:
        scale = (unit / y_scale).astype(np.float32)
        v = acc.astype(np.float32) * scale
        q = np.rint(v).astype(np.int64) + y_zp
        lo = 0 if lo_f == -np.inf else max(0, min(255, y_zp + int(np.rint(lo_f / y_scale))))
        hi = 255 if hi_f == np.inf else min(255, max(0, y_zp + int(np.rint(hi_f / y_scale))))
        return np.clip(q, lo, hi).astype(np.uint8)
    v = acc.astype(np.float32) * unit.astype(np.float32)
    return np.minimum(np.maximum(v, np.float32(lo_f)), np.float32(hi_f)).astype(np.float32)


def _assert_q_equal(got: np.ndarray, want: np.ndarray, context: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, f"{context}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    if want.dtype == np.uint8:
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max(initial=0) <= 1, f"{context}: max diff {diff.max()}"
        assert (diff > 0).mean() < 1e-3, f"{context}: {(diff > 0).sum()} of {diff.size} elements off by one"
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=context)


def _conv_ref(x, zx, w, stride, pad, dil, group):
    """int64 NCHW convolution of (x - zx) (padding is the real zero, i.e. the zero point)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xi = np.pad(x.astype(np.float64 if x.dtype.kind == "f" else np.int64) - zx, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])))
    oh = (xi.shape[2] - ((kh - 1) * dil[0] + 1)) // stride[0] + 1
    ow = (xi.shape[3] - ((kw - 1) * dil[1] + 1)) // stride[1] + 1
    out = np.zeros((n, m, oh, ow), np.result_type(xi.dtype, w.dtype, np.int64))
    mg = m // group
    for g in range(group):
        for ky in range(kh):
            for kx in range(kw):
                patch = xi[:, g * cg : (g + 1) * cg, ky * dil[0] : ky * dil[0] + (oh - 1) * stride[0] + 1 : stride[0],
                           kx * dil[1] : kx * dil[1] + (ow - 1) * stride[1] + 1 : stride[1]]
                out[:, g * mg : (g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, w[g * mg : (g + 1) * mg, :, ky, kx].astype(out.dtype))
    return out


def _qconv_case(case, act: str | None, seed: int, **extra):
    """Random uint8 input, int8 weights, float bias and the QConv attributes for a CONV_CASES-style
    case; returns (inputs, attrs, the int64 accumulators with the rounded bias, unit, bounds)."""
    n, c, h, wd, m, k, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, c, h, wd), dtype=np.uint8)
    w = rng.integers(-127, 128, (m, c // g, k, k), dtype=np.int8)
    b = rng.normal(0, 2, m).astype(np.float32)
    # scales the float32 attributes hold exactly: the kernel rounds the bias in units of the
    # attributes' values, and a float64 unit could put a near-tie on the other side
    zx, sx = 37, float(np.float32(0.02))
    sw = rng.uniform(0.001, 0.01, m).astype(np.float32).astype(np.float64)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, dilations=[d, d], group=g,
                 x_scale=sx, x_zero_point=zx, w_scale=[float(v) for v in sw], y_scale=0.5, y_zero_point=100, **extra)
    bounds = None
    if act == "Relu":
        attrs["activation"] = "Relu"
        bounds = (0.0, np.inf)
    elif act == "Clip":
        attrs.update(activation="Clip", activation_alpha=-3.0, activation_beta=6.0)
        bounds = (-3.0, 6.0)
    unit = (np.float64(sx) * sw).reshape(1, m, 1, 1)
    acc = _conv_ref(x, zx, w, (s, s), [p] * 4, (d, d), g) + np.rint(b.astype(np.float64).reshape(1, m, 1, 1) / unit).astype(np.int64)
    return {"x": x, "w": w, "b": b}, attrs, acc, unit, bounds


CONV_CASES = [
    # (N, C, H, W, M, K, stride, pad, dilation, group)
    (1, 1, 7, 7, 1, 3, 1, 1, 1, 1),
    (2, 3, 9, 11, 17, 3, 1, 1, 1, 1),
    (1, 32, 16, 16, 64, 3, 1, 1, 1, 1),
    (3, 5, 13, 7, 7, 3, 2, 0, 1, 1),
    (1, 16, 10, 10, 33, 1, 1, 0, 1, 1),
    (2, 6, 5, 7, 9, 1, 1, 0, 1, 1),
    (5, 8, 6, 6, 12, 3, 1, 1, 1, 1),  # batch >= 2 x threads: one task per image
    (4, 12, 5, 5, 7, 1, 1, 0, 1, 1),
    (1, 3, 8, 8, 5, 1, 2, 0, 1, 1),
    (1, 4, 12, 12, 8, 3, 1, 2, 2, 1),
    (2, 64, 8, 8, 64, 3, 1, 1, 1, 64),
    (1, 17, 15, 9, 17, 3, 2, 1, 1, 17),
    (1, 6, 20, 20, 6, 5, 1, 2, 1, 6),
    # grouped (one GEMM per group): 4 channels per group, a 1x1 conv read in place, a task per
    # image (batch >= 2 x threads) with stride, 5 channels per group (padded to 8), dilation
    (1, 8, 9, 9, 12, 3, 1, 1, 1, 2),
    (2, 24, 7, 7, 30, 1, 1, 0, 1, 3),
    (5, 12, 6, 6, 9, 3, 2, 1, 1, 3),
    (1, 20, 5, 5, 40, 3, 1, 2, 2, 4),
    # depthwise: dilated on the flat stride-1 loop, stride 3 on the per-row loop, and a 1x1 plane
    (2, 5, 9, 9, 5, 3, 1, 2, 2, 5),
    (1, 8, 11, 13, 8, 3, 3, 1, 1, 8),
    (3, 4, 1, 1, 4, 3, 1, 1, 1, 4),
    # depthwise stride 2 (on phase planes): rows of 40 and 35 (32-pixel runs and tails), an even and
    # an odd left pad, dilation, and a 5 x 5 window
    (1, 6, 21, 40, 6, 3, 2, 0, 1, 6),
    (2, 5, 12, 35, 5, 3, 2, 1, 2, 5),
    (1, 3, 9, 9, 3, 5, 2, 2, 1, 3),
    # fewer than 4 channels (k over (ky, kx, c), four k to a group): one channel on rows of 37
    # (16-pixel runs and a tail, panels across row ends), a digits-like 1 -> 32 stem, and two
    # channels with stride and dilation
    (2, 1, 20, 37, 9, 3, 1, 1, 1, 1),
    (3, 1, 32, 32, 32, 3, 1, 1, 1, 1),
    (1, 2, 17, 19, 6, 3, 2, 1, 2, 1),
    # row chunks (K over each window row's KW x C bytes, padded to 4): an RGB 7x7 stride-2 stem, an
    # 11x11 stride-4 one, a grey stride-2 conv, and two channels across panels and row ends
    (1, 3, 29, 31, 16, 7, 2, 3, 1, 1),
    (1, 3, 35, 35, 9, 11, 4, 2, 1, 1),
    (2, 1, 19, 23, 8, 3, 2, 1, 1, 1),
    (5, 2, 9, 40, 10, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("out_u8", [True, False], ids=["u8out", "f32out"])
@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
def test_qconv_matches_int64_reference(case, out_u8: bool, act: str | None, isa: str) -> None:
    ins, attrs, acc, unit, bounds = _qconv_case(case, act, hash(case) % 2**32)
    got = run_native("QConv", ins, attrs, isa=isa, consts=["w", "b"], domain="com.mopt",
                     output_dtypes=[U8 if out_u8 else F32])[0]
    want = _epilogue(acc, unit, out_u8, attrs["y_scale"], attrs["y_zero_point"], bounds)
    _assert_q_equal(got, want, f"QConv {case} {isa} out_u8={out_u8} act={act}")


MEAN_CASES = [
    (5, 8, 6, 6, 12, 3, 1, 1, 1, 1),    # a task per image (per-thread output buffer)
    (1, 16, 10, 10, 33, 1, 1, 0, 1, 1),  # one image split across panels (per-image buffer)
    (4, 1, 12, 13, 9, 3, 1, 1, 1, 1),   # bytewise, a task per image
    (1, 3, 9, 11, 17, 3, 2, 1, 1, 1),   # bytewise, one image
]


@pytest.mark.parametrize("case", MEAN_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("keepdims", [0, 1])
def test_qconv_global_mean_is_the_mean_of_its_output(case, keepdims: int, isa: str) -> None:
    """global_mean (a fused ReduceMean over H, W): the mean of the float output after the activation."""
    n, c, h, wd, m, k, s, p, d, g = case
    rng = np.random.default_rng(sum(case))
    x = rng.integers(0, 256, (n, c, h, wd), dtype=np.uint8)
    w = rng.integers(-127, 128, (m, c, k, k), dtype=np.int8)
    b = rng.normal(0, 2, m).astype(np.float32)
    zx, sx, sw = 37, float(np.float32(0.02)), rng.uniform(0.001, 0.01, m).astype(np.float32).astype(np.float64)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, x_scale=sx, x_zero_point=zx,
                 w_scale=[float(v) for v in sw], activation="Relu", global_mean=1, keepdims=keepdims)
    got = run_native("QConv", {"x": x, "w": w, "b": b}, attrs, isa=isa, consts=["w", "b"], domain="com.mopt",
                     output_dtypes=[F32])[0]
    unit = (np.float64(sx) * sw).reshape(1, m, 1, 1)
    acc = _conv_ref(x, zx, w, (s, s), [p] * 4, (d, d), 1) + np.rint(b.astype(np.float64).reshape(1, m, 1, 1) / unit).astype(np.int64)
    full = _epilogue(acc, unit, False, 1.0, 0, (0.0, np.inf))
    want = full.astype(np.float64).mean(axis=(2, 3), keepdims=bool(keepdims))
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_qconv_global_mean_needs_a_float_output(isa: str) -> None:
    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.ones((4, 4, 1, 1), np.int8)
    attrs = dict(kernel_shape=[1, 1], x_scale=0.1, x_zero_point=0, w_scale=[0.1] * 4, y_scale=0.1, y_zero_point=0,
                 global_mean=1)
    with pytest.raises(Exception, match="global_mean"):
        run_native("QConv", {"x": x, "w": w}, attrs, isa=isa, consts=["w"], domain="com.mopt", output_dtypes=[U8])


POOL_CASES = [
    # (N, C, H, W, M, K, stride, pad, dilation, group)
    (3, 1, 32, 32, 32, 3, 1, 1, 1, 1),   # bytewise (a grey stem), a task per image
    (1, 1, 20, 37, 9, 3, 1, 1, 1, 1),    # bytewise, odd width: 18 pooled columns, the last one dropped
    (1, 3, 4, 70, 5, 3, 1, 1, 1, 1),     # bytewise, 35 pooled columns over several panels
    (5, 32, 16, 16, 64, 3, 1, 1, 1, 1),  # planes, a task per image
    (1, 8, 9, 11, 12, 3, 1, 1, 1, 1),    # planes, odd H and W (the last row and column dropped)
    (2, 6, 7, 5, 9, 1, 1, 0, 1, 1),      # a 1x1 conv read in place
    (1, 12, 10, 14, 20, 3, 2, 1, 1, 1),  # strided conv, then the pool
    (5, 12, 8, 8, 9, 3, 1, 1, 1, 3),     # grouped
    (1, 4, 2, 9, 4, 3, 1, 1, 1, 1),      # one pooled row
    (1, 4, 3, 3, 4, 3, 1, 0, 1, 1),      # a 1x1 output: nothing left after the pool
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
def test_qconv_max_pool_is_the_pool_of_its_output(case, act: str | None, isa: str) -> None:
    """max_pool_2x2 (a fused 2x2 stride-2 MaxPool, floor mode): the pool of the uint8 output."""
    n, m = case[0], case[4]
    ins, attrs, acc, unit, bounds = _qconv_case(case, act, sum(case) + 1, max_pool_2x2=1)
    got = run_native("QConv", ins, attrs, isa=isa, consts=["w", "b"], domain="com.mopt", output_dtypes=[U8])[0]
    full = _epilogue(acc, unit, True, attrs["y_scale"], attrs["y_zero_point"], bounds)
    ph, pw = full.shape[2] // 2, full.shape[3] // 2
    quads = full[:, :, : 2 * ph, : 2 * pw].reshape(n, m, ph, 2, pw, 2)
    if not (ph and pw):
        assert got.shape == (n, m, ph, pw) and got.dtype == np.uint8, got.shape
        return
    _assert_q_equal(got, quads.max(axis=(3, 5)), f"QConv+pool {case} {isa} act={act}")


@pytest.mark.parametrize("what", ["float", "depthwise"])
def test_qconv_max_pool_needs_a_uint8_gemm_output(what: str, isa: str) -> None:
    x = np.zeros((1, 4, 6, 6), np.uint8)
    w = np.ones((4, 1 if what == "depthwise" else 4, 3, 3), np.int8)
    attrs = dict(kernel_shape=[3, 3], pads=[1] * 4, group=4 if what == "depthwise" else 1, x_scale=0.1, x_zero_point=0,
                 w_scale=[0.1] * 4, y_scale=0.1, y_zero_point=0, max_pool_2x2=1)
    with pytest.raises(Exception, match="max_pool_2x2"):
        run_native("QConv", {"x": x, "w": w}, attrs, isa=isa, consts=["w"], domain="com.mopt",
                   output_dtypes=[F32 if what == "float" else U8])


@pytest.mark.parametrize("stride", [1, 2])
def test_qdwconv_large_window_stays_exact(stride: int, isa: str) -> None:
    """A depthwise window of 23 x 23 = 529 taps at the operands' extremes sums past 2^24, where a
    float accumulator stops being exact: the kernel must still give the integer result."""
    k, m = 23, 3
    x = np.full((1, m, 25, 25), 255, dtype=np.uint8)
    x[0, 1, ::2] = 254  # one channel not quite uniform
    w = np.full((m, 1, k, k), 127, dtype=np.int8)
    w[2] = -128  # and one at the negative extreme
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[11] * 4, group=m, x_scale=1.0, x_zero_point=0,
                 w_scale=[1.0] * m)
    zx = 0
    got = run_native("QConv", {"x": x, "w": w}, attrs, isa=isa, consts=["w"], domain="com.mopt", output_dtypes=[F32])[0]
    acc = _conv_ref(x, zx, w, (stride, stride), [11] * 4, (1, 1), m)
    assert np.abs(acc).max() > 2**24  # the case this test is about
    np.testing.assert_array_equal(got, acc.astype(np.float32), err_msg=f"{isa} stride {stride}")


def test_qconv_float_semantics(isa: str) -> None:
    """Dequantized in, float out: the int8 conv is the float conv of the dequantized operands."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 8, 9, 9), dtype=np.uint8)
    w = rng.integers(-127, 128, (12, 8, 3, 3), dtype=np.int8)
    sx, zx, sw = 0.05, 128, rng.uniform(0.01, 0.02, 12)
    got = run_native("QConv", {"x": x, "w": w}, dict(kernel_shape=[3, 3], pads=[1] * 4, x_scale=sx, x_zero_point=zx,
                     w_scale=[float(v) for v in sw]), isa=isa, consts=["w"], domain="com.mopt", output_dtypes=[F32])[0]
    xf = (x.astype(np.float64) - zx) * sx
    wf = w.astype(np.float64) * sw.reshape(-1, 1, 1, 1)
    want = _conv_ref(xf, 0, wf, (1, 1), [1] * 4, (1, 1), 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


MATMUL_SHAPES = [(1, 1, 1), (7, 17, 5), (17, 64, 33), (64, 128, 10), (3, 1031, 17), (130, 256, 1000)]


@pytest.mark.parametrize("mkn", MATMUL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("out_u8", [True, False], ids=["u8out", "f32out"])
@pytest.mark.parametrize("act", [None, "Relu"])
def test_qmatmul_matches_int64_reference(mkn, out_u8: bool, act: str | None, isa: str) -> None:
    m, k, n = mkn
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    b = rng.normal(0, 1, n).astype(np.float32)
    sx, zx, sw = 0.03, 200, rng.uniform(0.001, 0.01, n)
    y_scale, y_zp = 0.25, 7
    attrs = dict(x_scale=sx, x_zero_point=zx, w_scale=[float(v) for v in sw], y_scale=y_scale, y_zero_point=y_zp)
    if act:
        attrs["activation"] = act
    got = run_native("QMatMul", {"x": x, "w": w, "b": b}, attrs, isa=isa, consts=["w", "b"], domain="com.mopt",
                     output_dtypes=[U8 if out_u8 else F32])[0]
    unit = np.float64(sx) * sw
    acc = (x.astype(np.int64) - zx) @ w.astype(np.int64) + np.rint(b.astype(np.float64) / unit).astype(np.int64)
    want = _epilogue(acc, unit.reshape(1, n), out_u8, y_scale, y_zp, (0.0, np.inf) if act else None)
    _assert_q_equal(got, want, f"QMatMul {mkn} {isa} out_u8={out_u8}")


def test_qmatmul_saturation_free_extremes(isa: str) -> None:
    """255 x -128 everywhere: vpmaddubsw-style int16 pair sums would saturate; the kernels must not."""
    k, n = 1000, 19
    x = np.full((5, k), 255, np.uint8)
    w = np.full((k, n), -128, np.int8)
    got = run_native("QMatMul", {"x": x, "w": w}, dict(x_scale=1.0, x_zero_point=0, w_scale=[1.0]), isa=isa,
                     consts=["w"], domain="com.mopt", output_dtypes=[F32])[0]
    np.testing.assert_array_equal(got, np.full((5, n), 255.0 * -128 * k, np.float32))


@pytest.mark.parametrize("shape", [(1, 3), (4, 7, 33), (2, 64, 256)])
def test_qmatmul_dynamic_close_to_float(shape, isa: str) -> None:
    rng = np.random.default_rng(len(shape))
    k, n = shape[-1], 24
    x = rng.normal(0, 1, shape).astype(np.float32)
    wf = rng.normal(0, 0.1, (k, n))
    sw = np.abs(wf).max(axis=0) / 127
    w = np.clip(np.rint(wf / sw), -127, 127).astype(np.int8)
    b = rng.normal(0, 0.1, n).astype(np.float32)
    got = run_native("QMatMul", {"x": x, "w": w, "b": b}, dict(dynamic=1, w_scale=[float(v) for v in sw]), isa=isa,
                     consts=["w", "b"], domain="com.mopt", output_dtypes=[F32])[0]
    want = x.astype(np.float64) @ (w.astype(np.float64) * sw) + b
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err < 0.02 * np.abs(want).max() + 1e-3, f"dynamic QMatMul error {err}"


@pytest.mark.parametrize("case", [((2, 3, 8, 8), 2, 2, 0), ((1, 5, 7, 9), 3, 2, 1), ((1, 1, 1, 1), 1, 1, 0),
                                  ((2, 3, 34, 70), 2, 2, 0), ((1, 2, 5, 33), 2, 2, 0), ((1, 2, 4, 20), 2, 2, 0)])
def test_qmaxpool_matches_reference(case, isa: str) -> None:
    shape, k, s, p = case
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = run_native("QMaxPool", {"x": x}, dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4), isa=isa,
                     domain="com.mopt", output_dtypes=[U8])[0]
    xf = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-1)
    oh, ow = (xf.shape[2] - k) // s + 1, (xf.shape[3] - k) // s + 1
    want = np.full((*shape[:2], oh, ow), -1, np.int64)
    for ky in range(k):
        for kx in range(k):
            want = np.maximum(want, xf[:, :, ky : ky + (oh - 1) * s + 1 : s, kx : kx + (ow - 1) * s + 1 : s])
    np.testing.assert_array_equal(got, want.astype(np.uint8))


@pytest.mark.parametrize("case", [
    # (shape, kernel (h, w), strides, pads (t, l, b, r), dilations, ceil_mode)
    ((1, 3, 55, 55), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 0),   # squeezenet's pools: stride-2 split rows
    ((1, 3, 56, 56), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),   # ceil mode: the last window runs past the edge
    ((2, 4, 56, 57), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),   # resnet's stem pool, an odd width
    ((1, 2, 20, 40), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),   # stride 1 (inception's pools)
    ((1, 2, 10, 37), (3, 2), (2, 1), (0, 1, 2, 0), (1, 1), 1),   # a 3 x 2 window, asymmetric pads, a window
    ((1, 2, 11, 38), (3, 2), (2, 2), (1, 1, 0, 0), (1, 1), 1),   # dropped by ceil mode; then one kept
    ((1, 2, 12, 19), (5, 4), (1, 2), (2, 3, 2, 1), (1, 1), 0),   # wide windows, stride 2 on columns only
    ((1, 2, 12, 19), (3, 3), (2, 2), (1, 1, 1, 1), (2, 2), 0),   # dilation: the per-window path
    ((1, 2, 3, 70), (1, 3), (1, 2), (0, 0, 0, 0), (1, 1), 0),    # one row, 34 outputs
])
def test_qmaxpool_windows_strides_pads_and_ceil_mode(case, isa: str) -> None:
    """QMaxPool against the max of the in-image pixels of each window (padding never wins)."""
    shape, (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw), ceil = case
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    got = run_native("QMaxPool", {"x": x}, dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr],
                                               dilations=[dh, dw], ceil_mode=ceil), isa=isa, domain="com.mopt",
                     output_dtypes=[U8])[0]

    def out_dim(n, k, s, d, p0, p1):
        span = n + p0 + p1 - ((k - 1) * d + 1)
        o = (-(-span // s) if ceil else span // s) + 1
        return o - 1 if ceil and (o - 1) * s >= n + p0 else o  # a window must start inside the image

    oh, ow = out_dim(shape[2], kh, sh, dh, pt, pb), out_dim(shape[3], kw, sw, dw, pl, pr)
    big = np.full((*shape[:2], oh * sh + kh * dh + shape[2], ow * sw + kw * dw + shape[3]), -1, np.int64)
    big[:, :, pt : pt + shape[2], pl : pl + shape[3]] = x
    want = np.full((*shape[:2], oh, ow), -1, np.int64)
    for ky in range(kh):
        for kx in range(kw):
            want = np.maximum(want, big[:, :, ky * dh : ky * dh + (oh - 1) * sh + 1 : sh, kx * dw : kx * dw + (ow - 1) * sw + 1 : sw])
    assert got.shape == want.shape and want.min() >= 0, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want.astype(np.uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize_match_onnx_reference(dtype, per_axis: bool, isa: str) -> None:
    from .helpers import check_op

    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
    x.flat[:4] = [0.5, 1.5, -2.5, 1000.0]  # ties to even and saturation
    scale = rng.uniform(0.01, 0.1, 5).astype(np.float32) if per_axis else np.array(0.05, np.float32)
    zp = np.full(scale.shape, 3 if dtype == np.uint8 else -3, dtype)
    q = check_op("QuantizeLinear", {"x": x, "s": scale, "z": zp}, {"axis": 1}, isa=isa, consts=["s", "z"], rtol=0, atol=0)[0]
    assert q.dtype == dtype
    check_op("DequantizeLinear", {"q": q, "s": scale, "z": zp}, {"axis": 1}, isa=isa, consts=["s", "z"], opset=19)


def test_qconv_rejects_bad_weights(isa: str) -> None:
    from mopt.errors import MoptError

    x = np.zeros((1, 4, 5, 5), np.uint8)
    w = np.zeros((4, 4, 3, 3), np.int8)
    with pytest.raises(MoptError, match="w_scale"):
        run_native("QConv", {"x": x, "w": w}, dict(kernel_shape=[3, 3], x_scale=0.1, w_scale=[0.1, 0.2]), isa=isa,
                   consts=["w"], domain="com.mopt", output_dtypes=[F32])


@pytest.mark.parametrize("act", [None, "Relu"])
@pytest.mark.parametrize("group", [1, 2])
def test_qconv_residual_before_activation(act: str | None, group: int, isa: str) -> None:
    rng = np.random.default_rng(5)
    c = 6 if group == 1 else 8
    x = rng.integers(0, 256, (2, c, 7, 9), dtype=np.uint8)
    w = rng.integers(-127, 128, (10, c // group, 3, 3), dtype=np.int8)
    b = rng.normal(0, 1, 10).astype(np.float32)
    r = rng.normal(0, 3, (2, 10, 7, 9)).astype(np.float32)
    sx, zx, sw = 0.02, 11, rng.uniform(0.001, 0.01, 10)
    attrs = dict(kernel_shape=[3, 3], pads=[1] * 4, x_scale=sx, x_zero_point=zx, w_scale=[float(v) for v in sw], group=group)
    if act:
        attrs["activation"] = act
    got = run_native("QConv", {"x": x, "w": w, "b": b, "r": r}, attrs, isa=isa, consts=["w", "b"], domain="com.mopt",
                     output_dtypes=[F32])[0]
    unit = (np.float64(sx) * sw).reshape(1, 10, 1, 1)
    acc = _conv_ref(x, zx, w, (1, 1), [1] * 4, (1, 1), group) + np.rint(b.astype(np.float64).reshape(1, 10, 1, 1) / unit).astype(np.int64)
    want = acc.astype(np.float32) * unit.astype(np.float32) + r
    if act:
        want = np.maximum(want, 0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_clip_bounds_over_a_tiny_output_scale(isa: str) -> None:
    """Clip(0, 6) with y_scale 1e-12 puts the upper bound 6e12 steps away: it must not wrap int32."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 256, (9, 20), dtype=np.uint8)
    w = rng.integers(-127, 128, (20, 7), dtype=np.int8)
    sx, sw, ys = 1e-12, np.full(7, 1e-3), 4e-11
    attrs = dict(x_scale=sx, x_zero_point=0, w_scale=[float(v) for v in sw], y_scale=ys, y_zero_point=0,
                 activation="Clip", activation_alpha=0.0, activation_beta=6.0)
    got = run_native("QMatMul", {"x": x, "w": w}, attrs, isa=isa, consts=["w"], domain="com.mopt", output_dtypes=[U8])[0]
    unit = np.float64(sx) * sw
    want = _epilogue(x.astype(np.int64) @ w.astype(np.int64), unit.reshape(1, 7), True, ys, 0, (0.0, 6.0))
    assert want.max() > 0
    _assert_q_equal(got, want, f"QMatMul Clip tiny scale {isa}")
