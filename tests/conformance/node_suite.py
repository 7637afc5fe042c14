"""The ONNX backend node-test suite, generated from the installed onnx package, run on mopt.

    python -m tests.conformance.node_suite            # totals, per-op table, every failure
    python -m tests.conformance.node_suite --update   # rewrite known_failures.txt from this run

Each case is compiled at -O2 and run on every data set it carries, with the case's own tolerances.
Verdicts: pass (and whether every node ran natively), mismatch, error (an exception; mopt's own
errors count as failing cleanly, anything else is a bug to fix).
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

KNOWN_FAILURES = Path(__file__).with_name("known_failures.txt")


@dataclass
class Outcome:
    verdict: str  # pass | mismatch | error
    native: bool = False  # every node ran on a native kernel
    why: str = ""
    clean: bool = True  # an error raised as a mopt.MoptError


@cache
def cases() -> dict[str, Any]:
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in node.collect_testcases()}


def known_failures() -> dict[str, str]:
    if not KNOWN_FAILURES.exists():
        return {}
    out = {}
    for line in KNOWN_FAILURES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            out[name] = why.strip()
    return out


def _feed(x: Any) -> Any:
    from onnx import TensorProto, numpy_helper

    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    return np.asarray(x) if isinstance(x, np.generic) else x


def _undefined_cast(name: str, source: Any, want: Any) -> np.ndarray | None:
    """The elements of a float -> integer Cast(Like) case whose source is out of the integer's range:
    ONNX leaves them undefined, and the stored outputs follow whatever the installed ml_dtypes does
    (0 from 0.7 on, the wrapped value before)."""
    import ml_dtypes

    if not name.startswith(("test_cast_", "test_castlike_")) or not isinstance(source, np.ndarray) or want is None:
        return None
    want = np.asarray(_feed(want))
    try:
        ml_dtypes.finfo(source.dtype)
        info = ml_dtypes.iinfo(want.dtype)
    except (TypeError, ValueError):
        return None
    if source.shape != want.shape:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.trunc(source.astype(np.float64))
    return ~(np.isfinite(t) & (t >= int(info.min)) & (t <= int(info.max)))


def _mismatch(got: Any, want: Any, rtol: float, atol: float, skip: np.ndarray | None = None) -> str | None:
    if isinstance(want, list | tuple):
        return "expected a sequence"
    if want is None:
        return None if got is None else "expected an absent optional"
    want, got = np.asarray(_feed(want)), np.asarray(got)
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype} != {want.dtype}"
    if skip is not None:
        want, got = want[~skip], got[~skip]
    if want.dtype == object:
        return None if np.array_equal(got, want) else "values differ"
    if want.dtype.kind in "biu":
        return None if np.array_equal(got, want) else "values differ"
    g, w = got.astype(np.float64), want.astype(np.float64)
    ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    return None if ok.all() else f"max abs error {np.nanmax(np.abs(g - w)):.3g}"


def run_case(name: str) -> Outcome:
    import mopt

    case = cases()[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = mopt.compile(case.model, 2)
            sess = mopt.Session(compiled, intra_op_threads=1)
            for inputs, outputs in case.data_sets:
                feeds = {vi.name: _feed(x) for vi, x in zip(case.model.graph.input, inputs, strict=False)}
                got = sess.run(None, feeds)
                source = next(iter(feeds.values()), None)
                for g, w in zip(got, outputs, strict=False):
                    why = _mismatch(g, w, case.rtol, case.atol, _undefined_cast(name, source, w))
                    if why:
                        return Outcome("mismatch", why=why)
    except Exception as e:
        lines = str(e).strip().splitlines()
        return Outcome("error", why=f"{type(e).__name__}: {lines[0][:200] if lines else ''}", clean=isinstance(e, mopt.MoptError))
    return Outcome("pass", native=not compiled.fallback_nodes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help=f"rewrite {KNOWN_FAILURES.name} from this run")
    ap.add_argument("--filter", default="", help="only cases whose name contains this")
    args = ap.parse_args(argv)
    names = [n for n in cases() if args.filter in n]
    results = {n: run_case(n) for n in names}
    totals = collections.Counter(r.verdict for r in results.values())
    native = sum(r.verdict == "pass" and r.native for r in results.values())
    print(f"cases {len(names)}  pass {totals['pass']} (native {native})  mismatch {totals['mismatch']}  error {totals['error']}")
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for n, r in results.items():
        for op in {nd.op_type for nd in cases()[n].model.graph.node}:
            per_op[op][r.verdict] += 1
            per_op[op]["native"] += r.verdict == "pass" and r.native
    print(f"{'op':28s} {'cases':>5s} {'pass':>5s} {'native':>6s}")
    for op in sorted(per_op):
        c = per_op[op]
        print(f"{op:28s} {c['pass'] + c['mismatch'] + c['error']:5d} {c['pass']:5d} {c['native']:6d}")
    for n, r in sorted(results.items()):
        if r.verdict != "pass":
            print(f"{r.verdict:8s} {n}: {r.why}")
    if args.update:
        lines = ["# Node-suite cases mopt does not pass yet, with why (python -m tests.conformance.node_suite --update)."]
        lines += [f"{n} {r.verdict}: {r.why}" for n, r in sorted(results.items()) if r.verdict != "pass"]
        KNOWN_FAILURES.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
