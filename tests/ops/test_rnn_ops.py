"""RNN, GRU and LSTM (rnn_ops.cc): against onnx.reference over directions, with and without B and
initial states, layout 0 and 1, LSTM peepholes, GRU linear_before_reset and odd sizes; and against a
numpy oracle of the spec (checked against onnx.reference where that covers the case) for what
onnx.reference ignores: sequence_lens, clip, input_forget and the activation functions. Wrong
shapes are clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

import mopt
from mopt.testing.assert_close import assert_close
from mopt.testing.reference import feeds_of, run_reference, single_op_model

from .helpers import check_op
from .native import check_native

OPS_COVERED = ["RNN", "GRU", "LSTM"]
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
NOUT = {"RNN": 2, "GRU": 2, "LSTM": 3}
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# name -> (function of x, alpha, beta; number of parameters it takes; default alpha, beta)
ACTS: dict[str, tuple[Any, int, float, float]] = {
    "Relu": (lambda x, a, b: np.maximum(x, 0), 0, 0, 0),
    "Tanh": (lambda x, a, b: np.tanh(x), 0, 0, 0),
    "Sigmoid": (lambda x, a, b: 1 / (1 + np.exp(-x)), 0, 0, 0),
    "Affine": (lambda x, a, b: a * x + b, 2, 1.0, 0.0),
    "LeakyRelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 1, 0.01, 0),
    "ThresholdedRelu": (lambda x, a, b: np.where(x > a, x, 0), 1, 1.0, 0),
    "ScaledTanh": (lambda x, a, b: a * np.tanh(b * x), 2, 1.0, 1.0),
    "HardSigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 2, 0.2, 0.5),
    "Elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1)), 1, 1.0, 0),
    "Softsign": (lambda x, a, b: x / (1 + np.abs(x)), 0, 0, 0),
    "Softplus": (lambda x, a, b: np.log1p(np.exp(x)), 0, 0, 0),
}


def oracle(op: str, inputs: dict, attrs: dict) -> list[np.ndarray]:
    """The ONNX spec in numpy, float64: sequence_lens, clip, activations (alpha/beta consumed in order by
    the functions that take them), input_forget, layout."""
    x, w, r = (inputs[k].astype(np.float64) for k in ("X", "W", "R"))
    layout = attrs.get("layout", 0)
    if layout:
        x = x.transpose(1, 0, 2)
    s, n, _ = x.shape
    d_count, gh, _ = w.shape
    g = GATES[op]
    h_size = gh // g
    b = inputs.get("B")
    b = np.zeros((d_count, 2 * gh)) if b is None else b.astype(np.float64)
    lens = inputs.get("sequence_lens")
    lens = np.full(n, s) if lens is None else lens
    def state(k: str) -> np.ndarray:
        v = inputs.get(k)
        if v is None:
            return np.zeros((d_count, n, h_size))
        v = v.astype(np.float64)
        return v.transpose(1, 0, 2) if layout else v
    h0, c0 = state("initial_h"), state("initial_c")
    p = inputs.get("P")
    p = np.zeros((d_count, 3 * h_size)) if p is None else p.astype(np.float64)
    names = attrs.get("activations") or DEFAULT_ACTS[op] * d_count
    if len(names) == len(DEFAULT_ACTS[op]) and d_count == 2:
        names = names * 2
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    fns = []
    for nm in names:
        fn, npar, a, be = ACTS[nm]
        if npar >= 1 and alphas:
            a = alphas.pop(0)
        if npar >= 2 and betas:
            be = betas.pop(0)
        fns.append(lambda v, fn=fn, a=a, be=be: fn(v, a, be))
    clip = attrs.get("clip")
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    lbr, input_forget = attrs.get("linear_before_reset", 0), attrs.get("input_forget", 0)
    direction = attrs.get("direction", "forward")
    y = np.zeros((s, d_count, n, h_size))
    yh, yc = np.zeros((d_count, n, h_size)), np.zeros((d_count, n, h_size))
    per = len(DEFAULT_ACTS[op])
    for d in range(d_count):
        rev = direction == "reverse" or d == 1
        f = fns[d * per : (d + 1) * per]
        wb, rb = b[d, :gh], b[d, gh:]
        for bi in range(n):
            h, c = h0[d, bi].copy(), c0[d, bi].copy()
            ln = int(lens[bi])
            for step in range(ln):
                t = ln - 1 - step if rev else step
                xw = w[d] @ x[t, bi] + wb
                if op == "RNN":
                    h = f[0](cl(xw + r[d] @ h + rb))
                elif op == "GRU":
                    hr = r[d] @ h
                    z = f[0](cl(xw[:h_size] + hr[:h_size] + rb[:h_size]))
                    rg = f[0](cl(xw[h_size : 2 * h_size] + hr[h_size : 2 * h_size] + rb[h_size : 2 * h_size]))
                    rh = r[d][2 * h_size :]
                    if lbr:
                        pre = xw[2 * h_size :] + rg * (rh @ h + rb[2 * h_size :])
                    else:
                        pre = xw[2 * h_size :] + rh @ (rg * h) + rb[2 * h_size :]
                    h = (1 - z) * f[1](cl(pre)) + z * h
                else:
                    gates = xw + r[d] @ h + rb
                    gi, go, gf, gc = np.split(gates, 4)
                    pi, po, pf = np.split(p[d], 3)
                    i = f[0](cl(gi + pi * c))
                    fg = 1 - i if input_forget else f[0](cl(gf + pf * c))
                    c = fg * c + i * f[1](cl(gc))
                    o = f[0](cl(go + po * c))
                    h = o * f[2](c)
                y[t, d, bi] = h
            yh[d, bi], yc[d, bi] = h, c
    dt = inputs["X"].dtype
    if layout:
        y, yh, yc = y.transpose(2, 0, 1, 3), yh.transpose(1, 0, 2), yc.transpose(1, 0, 2)
    return [a.astype(dt) for a in (y, yh, yc)[: NOUT[op]]]


def make_inputs(
    op: str, *, seq: int, batch: int, inp: int, hidden: int, dirs: int, bias: bool = True, init: bool = False,
    peep: bool = False, lens: list[int] | None = None, layout: int = 0, dtype: type = np.float32, seed: int = 0,
) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    g = GATES[op]
    def rnd(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(dtype)
    hshape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    out: dict[str, np.ndarray | None] = {
        "X": rnd(*((batch, seq, inp) if layout else (seq, batch, inp))),
        "W": rnd(dirs, g * hidden, inp, scale=0.5),
        "R": rnd(dirs, g * hidden, hidden, scale=0.5),
        "B": rnd(dirs, 2 * g * hidden, scale=0.5) if bias else None,
        "sequence_lens": None if lens is None else np.array(lens, np.int32),
        "initial_h": rnd(*hshape) if init else None,
    }
    if op == "LSTM":
        out["initial_c"] = rnd(*hshape) if init else None
        out["P"] = rnd(dirs, 3 * hidden, scale=0.5) if peep else None
    return out


DIRS = {"forward": 1, "reverse": 1, "bidirectional": 2}
SIZES = [(5, 3, 4, 7), (1, 1, 3, 1), (5, 1, 2, 17), (3, 3, 5, 2)]  # seq, batch, input, hidden


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize(("bias", "init"), [(True, True), (False, False), (True, False)], ids=["B+init", "bare", "B"])
@pytest.mark.parametrize("direction", list(DIRS))
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_against_reference(op: str, size: tuple, direction: str, bias: bool, init: bool, layout: int, isa: str) -> None:
    seq, batch, inp, hidden = size
    inputs = make_inputs(op, seq=seq, batch=batch, inp=inp, hidden=hidden, dirs=DIRS[direction], bias=bias, init=init,
                         peep=op == "LSTM" and bias, layout=layout)
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout}
    check_op(op, inputs, attrs, isa=isa, opset=14, num_outputs=NOUT[op], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", list(DIRS))
def test_gru_linear_before_reset(lbr: int, direction: str, isa: str) -> None:
    inputs = make_inputs("GRU", seq=5, batch=3, inp=4, hidden=7, dirs=DIRS[direction], init=True)
    attrs = {"hidden_size": 7, "direction": direction, "linear_before_reset": lbr}
    check_op("GRU", inputs, attrs, isa=isa, opset=14, num_outputs=2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_outputs", [1, 2])
def test_outputs_optional(num_outputs: int, isa: str) -> None:
    inputs = make_inputs("LSTM", seq=4, batch=2, inp=3, hidden=5, dirs=2, init=True, peep=True)
    check_op("LSTM", inputs, {"hidden_size": 5, "direction": "bidirectional"}, isa=isa, opset=14,
             num_outputs=num_outputs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float64(op: str, isa: str) -> None:
    inputs = make_inputs(op, seq=5, batch=3, inp=4, hidden=7, dirs=2, init=True, dtype=np.float64)
    check_op(op, inputs, {"hidden_size": 7, "direction": "bidirectional"}, isa=isa, opset=14, num_outputs=NOUT[op],
             rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_oracle_matches_onnx_reference(op: str) -> None:
    """The numpy oracle below agrees with onnx.reference where that implements the case."""
    for direction, layout in [("forward", 0), ("bidirectional", 1), ("reverse", 0)]:
        inputs = make_inputs(op, seq=4, batch=3, inp=3, hidden=5, dirs=DIRS[direction], init=True, peep=True, layout=layout)
        attrs = {"hidden_size": 5, "direction": direction, "layout": layout}
        m = single_op_model(op, inputs, attrs, opset=14, num_outputs=NOUT[op])
        want = run_reference(m, feeds_of(m, inputs))
        for g, w in zip(oracle(op, inputs, attrs), want, strict=True):
            assert_close(g, w, rtol=1e-5, atol=1e-5, context=f"oracle {op} {direction} layout={layout}")


def check_oracle(op: str, inputs: dict, attrs: dict, *, isa: str, tol: float = 1e-5) -> None:
    check_native(op, inputs, oracle(op, inputs, attrs), attrs, isa=isa, opset=14, rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", list(DIRS))
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_sequence_lens(op: str, direction: str, layout: int, isa: str) -> None:
    inputs = make_inputs(op, seq=5, batch=3, inp=4, hidden=7, dirs=DIRS[direction], init=True, peep=op == "LSTM",
                         lens=[5, 2, 1], layout=layout)
    check_oracle(op, inputs, {"hidden_size": 7, "direction": direction, "layout": layout}, isa=isa)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_clip(op: str, isa: str) -> None:
    inputs = make_inputs(op, seq=5, batch=3, inp=4, hidden=7, dirs=2, init=True, seed=3)
    inputs["X"] = inputs["X"] * 4  # type: ignore[operator]
    check_oracle(op, inputs, {"hidden_size": 7, "direction": "bidirectional", "clip": 0.7}, isa=isa)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_input_forget(direction: str, isa: str) -> None:
    inputs = make_inputs("LSTM", seq=5, batch=3, inp=4, hidden=7, dirs=DIRS[direction], init=True, peep=True)
    check_oracle("LSTM", inputs, {"hidden_size": 7, "direction": direction, "input_forget": 1}, isa=isa)


ACT_CASES = [
    ("RNN", ["Relu"], [], []),
    ("RNN", ["Sigmoid", "Affine"], [0.5], [0.1]),
    ("RNN", ["ScaledTanh"], [1.5], [0.7]),
    ("RNN", ["Softsign"], [], []),
    ("RNN", ["Softplus"], [], []),
    ("GRU", ["HardSigmoid", "LeakyRelu"], [0.3, 0.2], [0.4]),
    ("GRU", ["Sigmoid", "Elu"], [0.8], []),
    ("GRU", ["HardSigmoid", "Tanh", "Sigmoid", "ThresholdedRelu"], [0.25, 0.1], [0.55]),
    ("LSTM", ["Sigmoid", "Softsign", "Tanh"], [], []),
    ("LSTM", ["HardSigmoid", "Tanh", "Elu", "Sigmoid", "Tanh", "Tanh"], [0.2, 0.9], [0.5]),
]


@pytest.mark.parametrize(("op", "acts", "alpha", "beta"), ACT_CASES, ids=[f"{c[0]}-{'-'.join(c[1])}" for c in ACT_CASES])
def test_activations(op: str, acts: list, alpha: list, beta: list, isa: str) -> None:
    dirs = 2 if len(acts) > len(DEFAULT_ACTS[op]) else 1
    inputs = make_inputs(op, seq=5, batch=3, inp=4, hidden=7, dirs=dirs, init=True, seed=5)
    attrs: dict = {"hidden_size": 7, "direction": "bidirectional" if dirs == 2 else "forward", "activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    check_oracle(op, inputs, attrs, isa=isa)


def run_error(op: str, inputs: dict, attrs: dict, match: str) -> None:
    m = single_op_model(op, inputs, attrs, opset=14, num_outputs=2, output_dtypes=[TensorProto.FLOAT] * 2)
    cm = mopt.compile(m, 0)
    assert not cm.fallback_nodes
    with pytest.raises(mopt.MoptError, match=match):
        mopt.Session(cm, fallback=False).run(None, feeds_of(m, inputs))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_wrong_w_shape_is_an_error(op: str) -> None:
    inputs = make_inputs(op, seq=3, batch=2, inp=4, hidden=5, dirs=1)
    inputs["W"] = np.zeros((1, GATES[op] * 5, 3), np.float32)  # input size 3, X has 4
    run_error(op, inputs, {"hidden_size": 5}, r"W must have shape .*\[1, %d, 4\].*got \[1, %d, 3\]" % (GATES[op] * 5, GATES[op] * 5))


def test_wrong_direction_count_is_an_error() -> None:
    inputs = make_inputs("GRU", seq=3, batch=2, inp=4, hidden=5, dirs=1)
    run_error("GRU", inputs, {"hidden_size": 5, "direction": "bidirectional"}, "W must have shape")


def test_wrong_initial_h_and_lens_are_errors() -> None:
    inputs = make_inputs("RNN", seq=3, batch=2, inp=4, hidden=5, dirs=1)
    bad_h = dict(inputs, initial_h=np.zeros((1, 3, 5), np.float32))
    run_error("RNN", bad_h, {"hidden_size": 5}, "initial_h must have shape")
    bad_len = dict(inputs, sequence_lens=np.array([3, 4], np.int32))
    run_error("RNN", bad_len, {"hidden_size": 5}, r"sequence_lens\[1\] = 4 is outside")
