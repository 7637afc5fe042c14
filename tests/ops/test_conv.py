"""Conv (1-D and 2-D) and com.mopt.FusedConv against onnx.reference: every ISA, kernel sizes,
strides, asymmetric and automatic padding, dilations, groups (depthwise with multiplier 1 and 2),
bias, weights as initializers (prepacked) and as run-time inputs, odd sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from mopt.testing.assert_close import assert_close
from mopt.testing.random_inputs import random_input

from .helpers import check_op
from .native import check_fused, graph_model

OPS_COVERED = ["Conv", "com.mopt.FusedConv"]


def rnd(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return random_input(shape, np.float32, seed=seed, low=-1, high=1)


def conv_tol(w_shape: tuple[int, ...]) -> dict[str, float]:
    K = int(np.prod(w_shape[1:]))
    return {"rtol": 1e-4, "atol": 1e-4 * math.sqrt(max(K, 1))}


# name -> (x shape, w shape, attributes)
CONV2D = {
    "1x1": ((1, 17, 7, 7), (9, 17, 1, 1), {}),
    "1x1-c64": ((1, 64, 7, 7), (64, 64, 1, 1), {}),
    "1x1-stride2": ((1, 17, 7, 7), (9, 17, 1, 1), {"strides": [2, 2]}),
    "1x1-pads": ((1, 3, 7, 7), (5, 3, 1, 1), {"pads": [1, 0, 0, 2]}),
    "1x1-spatial1": ((1, 17, 1, 1), (7, 17, 1, 1), {}),
    "3x3": ((1, 3, 7, 7), (5, 3, 3, 3), {}),
    "3x3-pad1": ((1, 17, 17, 17), (9, 17, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3-stride2": ((1, 17, 17, 17), (9, 17, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "3x3-asym-pads": ((1, 3, 7, 17), (5, 3, 3, 3), {"pads": [0, 1, 2, 0]}),
    "3x3-spatial1": ((1, 3, 1, 1), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3-batch9": ((9, 3, 11, 13), (7, 3, 3, 3), {"pads": [1, 0, 1, 2], "strides": [2, 1]}),
    "3x3-c1": ((1, 1, 17, 7), (1, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3-c64": ((1, 64, 7, 7), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3-dil2": ((1, 3, 17, 17), (5, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "3x3-dil-mixed": ((1, 3, 17, 7), (5, 3, 3, 3), {"dilations": [3, 1], "strides": [1, 2], "pads": [0, 1, 1, 0]}),
    "5x5": ((1, 3, 17, 17), (7, 3, 5, 5), {"pads": [2, 2, 2, 2]}),
    "5x5-stride2-asym": ((1, 3, 17, 17), (7, 3, 5, 5), {"pads": [1, 2, 2, 1], "strides": [2, 2]}),
    "7x7-stride2": ((1, 3, 17, 17), (17, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    "7x7-valid": ((1, 3, 7, 7), (4, 3, 7, 7), {}),
    "3x5-rect": ((1, 3, 17, 7), (5, 3, 3, 5), {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 4, 1, 4]}),
    "kernel_shape-attr": ((1, 3, 7, 7), (5, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "same-upper-s1": ((1, 3, 7, 7), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER"}),
    "same-upper-s2": ((1, 3, 17, 17), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same-lower-s2": ((1, 3, 17, 17), (5, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "same-upper-k4": ((1, 3, 7, 7), (5, 3, 4, 4), {"auto_pad": "SAME_UPPER"}),
    "same-lower-k4": ((1, 3, 7, 7), (5, 3, 4, 4), {"auto_pad": "SAME_LOWER"}),
    "same-lower-dil": ((1, 3, 7, 17), (5, 3, 3, 2), {"auto_pad": "SAME_LOWER", "dilations": [2, 3]}),
    "valid": ((1, 3, 17, 7), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    "group2": ((1, 6, 7, 7), (4, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    # few pixels, many channels: the threads split rows and columns, sharing one packed im2col
    "s2-many-channels": ((1, 32, 16, 16), (256, 32, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "s2-groups-batch": ((2, 64, 15, 15), (256, 32, 3, 3), {"group": 2, "strides": [2, 2]}),
    "group3-stride2": ((1, 9, 17, 17), (6, 3, 3, 3), {"group": 3, "strides": [2, 2]}),
    "group4-1x1": ((1, 64, 7, 7), (32, 16, 1, 1), {"group": 4}),
    "dw": ((1, 17, 17, 17), (17, 1, 3, 3), {"group": 17, "pads": [1, 1, 1, 1]}),
    "dw-c64-wide": ((1, 64, 7, 45), (64, 1, 3, 3), {"group": 64, "pads": [1, 1, 1, 1]}),
    "dw-stride2": ((1, 17, 17, 17), (17, 1, 3, 3), {"group": 17, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "dw-5x5-asym": ((1, 3, 7, 40), (3, 1, 5, 5), {"group": 3, "pads": [2, 0, 1, 3]}),
    "dw-7x7": ((1, 3, 17, 17), (3, 1, 7, 7), {"group": 3, "pads": [3, 3, 3, 3]}),
    "dw-dil2": ((1, 5, 17, 37), (5, 1, 3, 3), {"group": 5, "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    "dw-dil-stride-mixed": ((1, 5, 17, 37), (5, 1, 3, 3), {"group": 5, "pads": [2, 3, 1, 0], "dilations": [2, 3], "strides": [2, 3]}),
    "dw-stride4-wide": ((1, 4, 9, 70), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1], "strides": [4, 4]}),
    "dw-same-lower": ((1, 5, 7, 7), (5, 1, 4, 4), {"group": 5, "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "dw-spatial1": ((1, 5, 1, 1), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}),
    "dw-1x1": ((1, 7, 7, 7), (7, 1, 1, 1), {"group": 7}),
    # narrow planes (under 16 outputs; under 8 on AVX-512) run channels-in-lanes: many channels, odd
    # counts, all geometry
    "dw-block-c37": ((2, 37, 7, 9), (37, 1, 3, 3), {"group": 37, "pads": [1, 1, 1, 1]}),
    "dw-block-c40-s2-dil": ((1, 40, 13, 15), (40, 1, 3, 3), {"group": 40, "pads": [2, 1, 0, 2], "strides": [2, 2], "dilations": [2, 1]}),
    "dw-block-5x5": ((1, 20, 11, 11), (20, 1, 5, 5), {"group": 20, "pads": [2, 2, 2, 2]}),
    "dw-block-no-pad": ((1, 33, 5, 6), (33, 1, 3, 3), {"group": 33}),
    "dw-block-7x7-c40": ((1, 40, 7, 7), (40, 1, 3, 3), {"group": 40, "pads": [1, 1, 1, 1]}),
    "dw-wide-s2-odd": ((1, 5, 9, 131), (5, 1, 3, 3), {"group": 5, "pads": [1, 0, 1, 1], "strides": [2, 2]}),
    # the 3x3 path with its taps at fixed offsets: row and column strides apart, rows of 21 and 33
    "dw-3x3-s1x2": ((1, 6, 20, 41), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [1, 2]}),
    "dw-3x3-s2x1-no-pad": ((2, 6, 21, 35), (6, 1, 3, 3), {"group": 6, "strides": [2, 1]}),
    # AVX-512's aligned 3x3 rows: widths at and around a vector (8, 16, 17, 33), pads 0-2, strides 1 and 2
    "dw-3x3-w16": ((1, 5, 9, 16), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}),
    "dw-3x3-w10-no-pad": ((2, 4, 10, 10), (4, 1, 3, 3), {"group": 4}),
    "dw-3x3-w33-s2-asym": ((1, 5, 11, 33), (5, 1, 3, 3), {"group": 5, "pads": [0, 1, 1, 0], "strides": [2, 2]}),
    "dw-3x3-w35-s2-pad2": ((1, 3, 12, 35), (3, 1, 3, 3), {"group": 3, "pads": [2, 2, 1, 2], "strides": [2, 2]}),
    "dw-3x3-w17-s1x2": ((1, 3, 7, 17), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1], "strides": [1, 2]}),
    "dw-mult2-3x3-w40": ((1, 3, 12, 40), (6, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "dw-mult2": ((1, 8, 17, 17), (16, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "dw-mult2-stride2": ((1, 3, 17, 17), (6, 1, 3, 3), {"group": 3, "pads": [0, 1, 1, 0], "strides": [2, 2]}),
    # one input channel, many outputs (a grayscale stem): plane convolutions of the same input plane
    "single-channel-in": ((2, 1, 17, 19), (8, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    "single-channel-in-5x5-s2": ((1, 1, 32, 33), (6, 1, 5, 5), {"strides": [2, 2], "pads": [2, 1, 2, 1]}),
    "dw-mult3-narrow": ((1, 4, 7, 7), (12, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "batch3": ((3, 3, 7, 7), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "batch3-1x1": ((3, 17, 7, 7), (9, 17, 1, 1), {}),
    # 1x1 over enough pixels for the threads to split the columns only, in blocks of unequal panels
    "1x1-by-columns": ((1, 19, 23, 29), (37, 19, 1, 1), {}),
    "1x1-by-columns-deep-k": ((1, 330, 20, 27), (29, 330, 1, 1), {}),
    "batch3-dw": ((3, 17, 7, 7), (17, 1, 3, 3), {"group": 17, "pads": [1, 1, 1, 1]}),
    "batch3-group": ((3, 6, 7, 7), (4, 3, 3, 3), {"group": 2}),
    "big-image": ((1, 3, 40, 40), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "deep-k": ((1, 64, 7, 7), (17, 64, 5, 5), {"pads": [2, 2, 2, 2]}),
    # the padded-image packing: K past one depth block (256), rows of 21 and 20 (a vector and a
    # tail), a panel that spans row ends, asymmetric pads, a batch of images (one per thread)
    "padded-deep-k-21": ((1, 40, 9, 21), (6, 40, 3, 3), {"pads": [1, 1, 1, 1]}),
    "padded-batch-asym": ((5, 33, 9, 20), (7, 33, 3, 3), {"pads": [1, 2, 0, 1]}),
    "padded-stride2-dil": ((2, 30, 15, 33), (9, 30, 3, 3), {"pads": [2, 2, 2, 2], "strides": [2, 1], "dilations": [2, 2]}),
    # non-overlapping windows (a patch embedding): rows of im2col^T copied, pixels x channels; sizes
    # that leave rows and columns over, a rectangular window, K = 1024 (rows a padded stride apart)
    "patch16-batch2": ((2, 3, 64, 48), (24, 3, 16, 16), {"strides": [16, 16]}),
    "patch4-leftover": ((1, 5, 18, 23), (7, 5, 4, 4), {"strides": [4, 4]}),
    "patch-rect-valid": ((1, 3, 12, 40), (9, 3, 2, 8), {"strides": [2, 8], "auto_pad": "VALID"}),
    "patch16-k1024": ((1, 4, 32, 48), (37, 4, 16, 16), {"strides": [16, 16]}),
}

CONV1D = {
    "1d-k1": ((1, 17, 17), (9, 17, 1), {}),
    "1d-k3": ((1, 3, 17), (5, 3, 3), {"pads": [1, 1]}),
    "1d-k5-asym": ((1, 3, 17), (5, 3, 5), {"pads": [0, 3]}),
    "1d-k7-stride2": ((1, 3, 1031), (5, 3, 7), {"pads": [3, 3], "strides": [2]}),
    "1d-dil3": ((1, 3, 17), (5, 3, 3), {"dilations": [3], "pads": [2, 1]}),
    "1d-len1": ((1, 3, 1), (5, 3, 3), {"pads": [1, 1]}),
    "1d-same-upper": ((1, 3, 7), (5, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [2]}),
    "1d-same-lower": ((1, 3, 7), (5, 3, 4), {"auto_pad": "SAME_LOWER", "strides": [2]}),
    "1d-valid": ((1, 3, 17), (5, 3, 3), {"auto_pad": "VALID"}),
    "1d-group": ((1, 6, 17), (4, 3, 3), {"group": 2, "pads": [1, 1]}),
    "1d-dw": ((1, 17, 40), (17, 1, 3), {"group": 17, "pads": [1, 1]}),
    "1d-dw-mult2": ((1, 4, 17), (8, 1, 5), {"group": 4, "pads": [2, 2]}),
    "1d-single-channel-in": ((2, 1, 33), (7, 1, 5), {"pads": [2, 1], "strides": [2]}),
    "1d-batch3": ((3, 3, 17), (5, 3, 3), {"pads": [1, 1]}),
}

W_WHERE = {"w-const": ("w",), "w-input": ()}


def run_conv(xs: tuple, ws: tuple, attrs: dict, bias: bool, w_where: str, isa: str, seed: int = 0) -> None:
    ins = {"x": rnd(xs, seed), "w": rnd(ws, seed + 1), "b": rnd((ws[0],), seed + 2) if bias else None}
    check_op("Conv", ins, attrs, isa=isa, consts=W_WHERE[w_where], **conv_tol(ws))


@pytest.mark.parametrize("w_where", list(W_WHERE), ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(CONV2D))
def test_conv2d(case: str, bias: bool, w_where: str, isa: str) -> None:
    xs, ws, attrs = CONV2D[case]
    run_conv(xs, ws, attrs, bias, w_where, isa)


@pytest.mark.parametrize("w_where", list(W_WHERE), ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(CONV1D))
def test_conv1d(case: str, bias: bool, w_where: str, isa: str) -> None:
    xs, ws, attrs = CONV1D[case]
    run_conv(xs, ws, attrs, bias, w_where, isa)


@pytest.mark.parametrize("case", ["batch0", "out-channels0"])
def test_conv_empty(case: str, isa: str) -> None:
    xs, ws = ((0, 3, 7, 7), (5, 3, 3, 3)) if case == "batch0" else ((2, 3, 7, 7), (0, 3, 3, 3))
    ins = {"x": rnd(xs, 1), "w": rnd(ws, 2)}
    check_op("Conv", ins, {"pads": [1, 1, 1, 1]}, isa=isa, consts=["w"], rtol=0, atol=0)


def test_conv_constant_bias(isa: str) -> None:
    ins = {"x": rnd((2, 6, 7, 7), 1), "w": rnd((4, 3, 3, 3), 2), "b": rnd((4,), 3)}
    check_op("Conv", ins, {"group": 2}, isa=isa, consts=["w", "b"], **conv_tol((4, 3, 3, 3)))


# -- FusedConv (made by the -O2 fusion passes) --------------------------------------------------

FUSED_CASES = {
    "gemm-path": ((2, 6, 9, 9), (8, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
    "direct-1x1": ((1, 17, 7, 7), (17, 17, 1, 1), {}),
    "grouped": ((1, 6, 9, 9), (6, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "depthwise": ((2, 8, 9, 37), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    # narrow planes: a block of channels in the vector lanes (37: blocks of 16 and a partial one)
    "depthwise-narrow": ((2, 37, 7, 7), (37, 1, 3, 3), {"group": 37, "pads": [1, 1, 1, 1]}),
    "single-channel-in": ((2, 1, 16, 16), (30, 1, 3, 3), {"pads": [1, 1, 1, 1]}),
    "1d": ((1, 5, 17), (5, 5, 3), {"pads": [1, 1]}),
    # few pixels or few channels: computed as pixels x channels, stored transposed
    "pixels-rows-7x7": ((1, 64, 7, 7), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    "pixels-rows-c32": ((2, 16, 17, 17), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "pixels-rows-grouped": ((1, 64, 7, 7), (64, 32, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    # 25 pixels x 96 channels: the transposed store in 16 x 16 blocks with partial ones on both edges
    "pixels-rows-5x5-c96": ((1, 20, 5, 5), (96, 20, 3, 3), {"pads": [1, 1, 1, 1]}),
    # batches of small images: each thread takes whole images (both orientations, and groups)
    "batch-images": ((7, 6, 9, 9), (8, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
    "batch-pixels-rows": ((6, 16, 7, 7), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "batch-grouped-1x1": ((3, 6, 5, 5), (6, 2, 1, 1), {"group": 3}),
    # a batch of 16x16 maps with K = 270 (a small CNN's middle layer): padded-image packing, a
    # column panel at a time, epilogue per panel
    "batch-padded-deep-k": ((5, 30, 16, 16), (32, 30, 3, 3), {"pads": [1, 1, 1, 1]}),
    # a patch embedding (non-overlapping 8x8 windows): the epilogue on the transposed store
    "patches": ((3, 3, 40, 33), (20, 3, 8, 8), {"strides": [8, 8]}),
}

ACTIVATIONS = {
    "Relu": ({}, 18),
    "LeakyRelu": ({"alpha": 0.1}, 18),
    "Sigmoid": ({}, 18),
    "Tanh": ({}, 18),
    "HardSigmoid": ({"alpha": 0.25, "beta": 0.5}, 18),
    "HardSwish": ({}, 18),
    "Gelu": ({}, 20),
    "Clip": ({}, 18),
    "Silu": ({}, 18),  # x * Sigmoid(x), as YOLOv5/v8 write it after every convolution
}


def _fused_model(case: str, *, residual: bool, act: str | None, bias: bool = True) -> tuple:
    xs, ws, attrs = FUSED_CASES[case]
    x, w, b = rnd(xs, 1), rnd(ws, 2), rnd((ws[0],), 3)
    conv_in = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["c"], **attrs)]
    inputs = {"x": x, "w": w, "b": b} if bias else {"x": x, "w": w}
    feeds = {"x": x}
    src = "c"
    if residual:
        # every case keeps the spatial size but the patches (no padding, stride = window)
        strides = attrs.get("strides", [1] * (len(xs) - 2))
        ys = (xs[0], ws[0], *((n - k) // s_ + 1 if "pads" not in attrs else n for n, k, s_ in zip(xs[2:], ws[2:], strides, strict=True)))
        r = rnd(ys, 4)
        inputs["r"] = r
        feeds["r"] = r
        nodes.append(helper.make_node("Add", ["r", "c"], ["s"]))
        src = "s"
    consts = ["w", "b"]
    opset = 18
    if act is not None:
        act_attrs, opset = ACTIVATIONS[act]
        if act == "Clip":
            inputs["lo"], inputs["hi"] = np.array(0.0, np.float32), np.array(0.6, np.float32)
            nodes.append(helper.make_node("Clip", [src, "lo", "hi"], ["y"]))
            consts += ["lo", "hi"]
        elif act == "Silu":
            nodes += [helper.make_node("Sigmoid", [src], ["sig"]), helper.make_node("Mul", [src, "sig"], ["y"])]
        else:
            nodes.append(helper.make_node(act, [src], ["y"], **act_attrs))
    else:
        nodes.append(helper.make_node("Identity", [src], ["y"]))
    return graph_model(nodes, inputs, ["y"], consts=consts, opset=opset), feeds, ws


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_conv_activation(case: str, act: str, isa: str) -> None:
    model, feeds, ws = _fused_model(case, residual=False, act=act)
    check_fused(model, feeds, "com.mopt.FusedConv", isa=isa, **conv_tol(ws))


@pytest.mark.parametrize("act", [None, "Relu", "Sigmoid", "Silu"], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_conv_residual(case: str, bias: bool, act: str | None, isa: str) -> None:
    model, feeds, ws = _fused_model(case, residual=True, act=act, bias=bias)
    check_fused(model, feeds, "com.mopt.FusedConv", isa=isa, **conv_tol(ws))


@pytest.mark.parametrize("case", ["pixels-rows-7x7", "pixels-rows-grouped", "batch-pixels-rows"])
def test_few_pixels_or_channels_run_as_pixels_by_channels(case: str, isa: str) -> None:
    import mopt

    model, feeds, ws = _fused_model(case, residual=True, act="Relu")
    sess = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa)
    assert any("pixels_x_channels" in impl and "prepacked_w" in impl for _, _, impl in sess.kernels()), sess.kernels()
    check_fused(model, feeds, "com.mopt.FusedConv", isa=isa, **conv_tol(ws))


def test_patch_embedding_runs_over_copied_rows(isa: str) -> None:
    """ViT's 16x16 / stride-16 embedding: the patches path, its weights prepacked by the compiler."""
    import mopt

    model, feeds, ws = _fused_model("patches", residual=False, act="Gelu")
    sess = mopt.Session(mopt.compile(model, 2, isa=isa), isa=isa)
    assert any("patches" in impl and "prepacked_w" in impl for _, _, impl in sess.kernels()), sess.kernels()
    check_fused(model, feeds, "com.mopt.FusedConv", isa=isa, **conv_tol(ws))


@pytest.mark.parametrize(("packed_for", "run_on"), [("avx512", "avx2"), ("avx2", "avx512"), ("scalar", "avx2"), ("avx2", "scalar")])
def test_weights_packed_for_another_isa_are_repacked(packed_for: str, run_on: str) -> None:
    import mopt
    from mopt.testing.random_inputs import available_isas
    from mopt.testing.reference import run_reference

    if not {packed_for, run_on} <= set(available_isas()):
        pytest.skip(f"{packed_for} or {run_on} not available on this CPU")
    for case in ["pixels-rows-7x7", "gemm-path"]:
        model, feeds, ws = _fused_model(case, residual=False, act=None)
        (want,) = run_reference(model, feeds)
        (got,) = mopt.Session(mopt.compile(model, 2, isa=packed_for), isa=run_on).run(None, feeds)
        assert_close(got, want, context=f"{case} packed for {packed_for}, run on {run_on}", **conv_tol(ws))


def test_bad_window_geometry_names_the_node() -> None:
    """kernel_shape disagreeing with W on a stride-as-window convolution: the error names the node
    (the weight packer, which looks at the window to pick the patch layout, must not fail first)."""
    from onnx import TensorProto, numpy_helper

    import mopt
    from mopt.errors import MoptError

    w = numpy_helper.from_array(np.ones((4, 3, 4, 4), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[4, 4], kernel_shape=[3, 3], name="bad_conv")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(MoptError, match=r"bad_conv.*kernel_shape"):
        mopt.Session(model.SerializeToString(), level=3, fallback=False).run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
