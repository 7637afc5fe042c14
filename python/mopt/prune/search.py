"""How much each layer gives up: channel importance, per-layer sensitivity, a FLOPs-targeted plan.

Importance of a channel class: the L2 norm of its weight rows (no data), or, with calibration
data, how much it feeds its consumers: mean |activation| x norm of the consumer's weight column,
normalized per consumer and summed over the consumers it reaches.

Allocation: with calibration data each prunable component (layers tied by residuals/concats count
as one) is pruned alone to each of 15 levels (1/16 .. 15/16 of its channels removed) and the output
error on the calibration data is measured; a greedy search then removes, one level at a time, the
step with the least added error per FLOP saved until the target is met. Without data every
component gives up the same fraction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from mopt.errors import InvalidArgumentError
from mopt.prune.structured import ChannelAnalysis, analyze, apply_pruning

LEVELS = 16  # a component may lose k/16 of its prunable channels, k = 0..15


def with_static_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy whose symbolic input dimensions are `batch` (so FLOPs can be counted)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = batch
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    return m


def model_cost(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameters, FLOPs per item) as `mopt inspect` counts them (Conv/Gemm/MatMul, batch 1)."""
    from mopt.frontend.onnx_import import import_onnx
    from mopt.report import graph_report

    rep = graph_report(import_onnx(with_static_batch(model)))
    return rep.parameters, rep.flops


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    import mopt

    m = model
    if outputs:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
    sess = mopt.Session(m, level=0 if outputs else 2)
    return sess.run(None, feeds)


def activation_means(an: ChannelAnalysis, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(mean, mean |x|) per channel index of every tensor a consumer reads, over the calibration data."""
    tensors = sorted({x for _, x in an.consumers})
    acts = dict(zip(tensors, _run(an.model, feeds, tensors), strict=True)) if tensors else {}
    mean, mean_abs = {}, {}
    for x, a in acts.items():
        ax = an.ids[x][0]
        flat = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1).astype(np.float64)
        mean[x], mean_abs[x] = flat.mean(1), np.abs(flat).mean(1)
    return mean, mean_abs


def importance(an: ChannelAnalysis, feeds: dict[str, np.ndarray] | None = None) -> dict[int, float]:
    """Score per channel class root (higher = more important)."""
    score: dict[int, float] = {}
    g = an.model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    if feeds is None:
        for src in an.sources:
            node = g.node[src.node]
            w = consts[node.input[1]]
            out_axis = next(s.axis for s in an.slices if s.node == src.node and s.input == 1 and s.tensor == node.output[0])
            norms = np.sqrt((np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1).astype(np.float64) ** 2).sum(1))
            norms = norms / (norms.mean() + 1e-12)
            for c, cid in enumerate(an.source_ids[src.node]):
                r = an.root(cid)
                score[r] = score.get(r, 0.0) + float(norms[c])
        return score
    mean, mean_abs = activation_means(an, feeds)
    for k, x in an.consumers:
        s = next(s for s in an.slices if s.node == k and s.tensor == x)
        w = consts[g.node[k].input[s.input]]
        col = np.sqrt((np.moveaxis(w, s.axis, 0).reshape(w.shape[s.axis], -1).astype(np.float64) ** 2).sum(1))
        # what the consumer loses if the channel becomes its mean: its spread around the mean
        spread = mean_abs[x] - np.abs(mean[x])
        contrib = col * (spread + 1e-3 * mean_abs[x])
        contrib = contrib / (contrib.mean() + 1e-12)
        for i, cid in enumerate(an.ids[x][1]):
            r = an.root(cid)
            score[r] = score.get(r, 0.0) + float(contrib[i])
    return score


@dataclass
class LayerChange:
    name: str
    op: str
    before: int
    after: int


@dataclass
class PruneResult:
    model: onnx.ModelProto
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    layers: list[LayerChange]
    error: float | None = None  # relative output error on the calibration data
    sensitivity: dict[str, list[float]] = field(default_factory=dict)  # component -> error per level


def _latency(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int = 9) -> float:
    import mopt
    from mopt.prune.report import median_latency

    sess = mopt.Session(model, level=3, intra_op_threads=1)
    return median_latency(lambda: sess.run(None, feeds), runs, warmup=2)


def _rel_error(ys: list[np.ndarray], refs: list[np.ndarray]) -> float:
    num = sum(float(((y.astype(np.float64) - r) ** 2).sum()) for y, r in zip(ys, refs, strict=True))
    den = sum(float((r.astype(np.float64) ** 2).sum()) for r in refs)
    return num / (den + 1e-30)


def _removed_for(an: ChannelAnalysis, comps: list[list[int]], ranked: list[list[int]], levels: list[int], multiple_of: int) -> set[int]:
    removed: set[int] = set()
    for j, lv in enumerate(levels):
        n = len(ranked[j])
        keep = n - (n * lv) // LEVELS
        if multiple_of > 1 and lv:
            keep = max(multiple_of, int(round(keep / multiple_of)) * multiple_of)
        keep = max(1, min(n, keep))
        removed.update(ranked[j][: n - keep])
    return removed


def prune(
    model: onnx.ModelProto,
    target_flops: float = 0.5,
    calibration: dict[str, np.ndarray] | None = None,
    *,
    multiple_of: int = 1,
    allocation: str = "sensitivity",
    refit_layers: bool = True,
    log: Callable[[str], None] | None = None,
    plan: dict[str, int] | None = None,
) -> PruneResult:
    """Removes channels until FLOPs <= target_flops x the original's (a fraction in (0, 1]).

    allocation: "sensitivity" (needs calibration data; each layer gives up what costs the least
    output error per FLOP), "latency" (as sensitivity, but the saving of a step is half its FLOPs and
    half its measured mopt latency at batch 64, one thread: kernels do not speed up in proportion
    to channels) or "uniform" (every layer gives up the same fraction of its channels).
    refit_layers: with calibration data, refit the layers that lost inputs by least squares
    (mopt.prune.refit) after the plan is chosen.
    plan: the levels themselves, component name -> k (k/16 of its channels removed; components not
    named keep all), instead of a search: a plan found once (e.g. by the latency allocation, whose
    timings vary from run to run) then gives the same model every time. target_flops is not used.
    """
    if not 0.0 < target_flops <= 1.0:
        raise InvalidArgumentError(f"target FLOPs must be a fraction in (0, 1], got {target_flops}")
    say = log or (lambda s: None)
    an = analyze(model)
    params0, flops0 = model_cost(model)
    if flops0 == 0:
        raise InvalidArgumentError("the model has no Conv/Gemm/MatMul with static shapes: there is no FLOPs count to reduce")
    score = importance(an, calibration)
    means = activation_means(an, calibration)[0] if calibration is not None else None
    comps = [c for c in an.components() if an.prunable_classes(c)]
    if not comps:
        raise InvalidArgumentError("nothing in this model can be pruned (every channel reaches an output or an op pruning cannot rewrite)")
    ranked = [sorted(an.prunable_classes(c), key=lambda r: score.get(r, 0.0)) for c in comps]
    names = ["+".join(model.graph.node[n].name or model.graph.node[n].output[0] for n in c) for c in comps]
    cache: dict[tuple[int, ...], int] = {}

    def flops(levels: list[int]) -> int:
        key = tuple(levels)
        if key not in cache:
            cache[key] = model_cost(apply_pruning(an, _removed_for(an, comps, ranked, levels, multiple_of), means))[1]
        return cache[key]

    target = target_flops * flops0
    sens: dict[str, list[float]] = {}
    if allocation not in ("sensitivity", "uniform", "latency"):
        raise InvalidArgumentError(f"allocation must be 'sensitivity', 'uniform' or 'latency', got '{allocation}'")
    if plan is not None:
        unknown = sorted(set(plan) - set(names))
        if unknown:
            raise InvalidArgumentError(f"plan names {', '.join(unknown)}; the prunable components are {', '.join(names)}")
        bad = [f"{k}={v}" for k, v in plan.items() if not 0 <= v < LEVELS]
        if bad:
            raise InvalidArgumentError(f"plan levels run from 0 to {LEVELS - 1} (sixteenths removed), got {', '.join(bad)}")
        levels = [plan.get(n, 0) for n in names]
        target = float("inf")
    elif calibration is None or allocation == "uniform":
        lv = 0
        while flops([lv] * len(comps)) > target and lv < LEVELS - 1:
            lv += 1
        levels = [lv] * len(comps)
    else:
        refs = _run(model, calibration)
        table = []
        for j in range(len(comps)):
            errs = [0.0]
            for lv in range(1, LEVELS):
                levels = [0] * len(comps)
                levels[j] = lv
                pruned = apply_pruning(an, _removed_for(an, comps, ranked, levels, multiple_of), means)
                errs.append(_rel_error(_run(pruned, calibration), refs))
            table.append(errs)
            sens[names[j]] = errs
            say(f"  sensitivity {names[j]}: " + " ".join(f"{e:.3f}" for e in errs[1::3]) + "  (1/16, 4/16, ... removed)")
        lat: list[list[float]] = []
        if allocation == "latency":
            batch = np.concatenate([next(iter(calibration.values()))] * 64)[:64]
            name = next(iter(calibration))
            base = _latency(model, {name: batch})
            for j in range(len(comps)):
                row = [1.0]
                for lv in range(1, LEVELS):
                    levels = [0] * len(comps)
                    levels[j] = lv
                    pruned = apply_pruning(an, _removed_for(an, comps, ranked, levels, multiple_of), means)
                    row.append(_latency(pruned, {name: batch}) / base)
                lat.append(row)
                say(f"  mopt latency {names[j]}: " + " ".join(f"{e:.2f}" for e in row[1::3]) + "  (x the original's, batch 64)")
        levels = [0] * len(comps)
        while flops(levels) > target:
            best, best_cost = -1, float("inf")
            best_levels = levels
            for j in range(len(comps)):
                trial = list(levels)
                saved = 0
                # small layers: a level may remove no whole channel, so step until one goes
                while saved <= 0 and trial[j] + 1 < LEVELS:
                    trial[j] += 1
                    saved = flops(levels) - flops(trial)
                if saved <= 0:
                    continue
                cost = max(table[j][trial[j]] - table[j][levels[j]], 0.0) + 1e-9
                if lat:  # half FLOPs, half measured time: steps that make the kernels faster go first
                    saved = 0.5 * saved / flops0 + 0.5 * max(lat[j][levels[j]] - lat[j][trial[j]], 0.0)
                if cost / saved < best_cost:
                    best, best_cost, best_levels = j, cost / saved, trial
            if best < 0:
                break
            levels = best_levels
    say("  plan: " + ", ".join(f"{n}={lv}" for n, lv in zip(names, levels, strict=True)) + "  (sixteenths removed)")
    removed = _removed_for(an, comps, ranked, levels, multiple_of)
    pruned = apply_pruning(an, removed, means)
    if calibration is not None and refit_layers:
        from mopt.prune.refit import refit

        pruned = refit(model, an, pruned, removed, calibration)
    params1, flops1 = model_cost(pruned)
    if flops1 > target:
        say(f"  note: reached {flops1 / flops0:.2f} of the FLOPs, not {target_flops:.2f}: the rest is pinned or would empty a layer")
    layers = []
    for src in an.sources:
        kept = sum(1 for cid in an.source_ids[src.node] if an.root(cid) not in removed)
        layers.append(LayerChange(src.name, src.op, src.channels, kept))
    err = _rel_error(_run(pruned, calibration), _run(model, calibration)) if calibration is not None else None
    return PruneResult(pruned, flops0, flops1, params0, params1, layers, err, sens)
