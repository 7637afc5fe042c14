"""Comparisons that say where and by how much two results differ."""

from __future__ import annotations

import numpy as np


def max_error(got: np.ndarray, want: np.ndarray) -> float:
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.size == 0:
        return 0.0
    both_nan = np.isnan(g) & np.isnan(w)
    same_inf = np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
    return float(np.nan_to_num(diff, nan=np.inf).max())


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6, context: str = "") -> None:
    """Elementwise |got - want| <= atol + rtol * |want|, NaN matching NaN; same shape and dtype."""
    got, want = np.asarray(got), np.asarray(want)
    where = f" [{context}]" if context else ""
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}{where}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != expected {want.dtype}{where}"
    if got.dtype.kind in "biu" or got.dtype == np.bool_:
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{len(bad)} elements differ, first at {tuple(bad[0])}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}{where}"
        return
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        idx = tuple(np.argwhere(~ok)[0])
        raise AssertionError(
            f"{int((~ok).sum())} of {ok.size} elements differ (rtol={rtol}, atol={atol}); max abs error "
            f"{max_error(g, w):.3g}; first at {idx}: got {g[idx]!r}, expected {w[idx]!r}{where}"
        )


def assert_model_close(got: np.ndarray, want: np.ndarray, context: str = "") -> None:
    """The model-level criterion: max abs error <= 1e-4 * max|reference| + 1e-5."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape} [{context}]"
    err = max_error(got, want)
    tol = 1e-4 * float(np.abs(want).max(initial=0.0)) + 1e-5
    assert err <= tol, f"max abs error {err:.3g} > tolerance {tol:.3g} [{context}]"
