"""Every case of the ONNX node-test suite: the ones mopt passes must keep passing; the ones listed in
known_failures.txt must still fail cleanly (a mopt error or a numeric mismatch, never a crash or a
foreign exception), and must be taken off the list once they pass."""

from __future__ import annotations

import pytest

from .node_suite import cases, known_failures, run_case

pytestmark = pytest.mark.conformance
KNOWN = known_failures()
# Ops whose outputs are random draws: the stored outputs come from one generator's stream, so a
# case may match or not by chance; it must run cleanly, its values are not compared.
RANDOM = ("test_bernoulli",)


@pytest.mark.parametrize("name", sorted(cases()))
def test_node_case(name: str) -> None:
    if name.startswith("test_image_decoder"):
        pytest.importorskip("PIL", reason="the reference ImageDecoder needs Pillow (in the test extra)")
    r = run_case(name)
    if name.startswith(RANDOM):
        assert r.verdict in ("pass", "mismatch"), f"{name}: {r.verdict}: {r.why}"
        pytest.skip("random output: compared with the stored draw only by chance")
    if name in KNOWN:
        assert r.verdict != "pass", f"{name} passes now: take it off known_failures.txt"
        assert r.clean, f"{name} fails with a foreign exception: {r.why}"
        pytest.xfail(KNOWN[name])
    assert r.verdict == "pass", f"{r.verdict}: {r.why}"
