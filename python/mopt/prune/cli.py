"""`mopt prune` and `mopt distill`: the commands, kept here so mopt/cli.py only registers them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from mopt.errors import InvalidArgumentError


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-inputs", metavar="DATA", help="inputs for the accuracy row: FILE.npy or FILE.npz:KEY")
    p.add_argument("--eval-labels", metavar="DATA", help="integer labels for --eval-inputs: FILE.npy or FILE.npz:KEY")
    p.add_argument("--batch", type=int, default=64, help="batch size of the latency rows (default 64)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per latency figure (median reported; default 20)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--no-report", action="store_true", help="skip the before/after table")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "prune", help="remove channels (structured pruning) down to a FLOPs target, or zero weight blocks (--sparsity)"
    )
    p.add_argument("model")
    p.add_argument("-o", "--output", help="pruned model path (default: MODEL.pruned.onnx)")
    p.add_argument("--target-flops", type=float, default=0.5, help="fraction of the FLOPs to keep (default 0.5)")
    p.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help="block magnitude pruning instead: zero this fraction of the blocks of every MatMul/Gemm weight, "
        "smallest L2 norm first (the runtime's block-sparse kernel takes them at block density <= "
        "mopt.lower.block_sparse.MAX_DENSITY)",
    )
    p.add_argument("--block", default="1x8", help="block of --sparsity: INPUTSxOUTPUTS of the [K, N] weight (default 1x8, the kernel's)")
    p.add_argument("--calibration", metavar="DATA", help="inputs for importance and sensitivity: FILE.npy or FILE.npz:KEY")
    p.add_argument("--multiple-of", type=int, default=1, help="keep channel counts a multiple of this (SIMD width)")
    p.add_argument(
        "--allocation",
        choices=["sensitivity", "latency", "uniform"],
        default=None,
        help="how layers share the cut: measured output error per FLOP (default with --calibration), the same with measured "
        "mopt latency counted in, or the same fraction everywhere (default without data)",
    )
    _add_report_args(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("distill", help="fine-tune a (pruned) student to match its teacher (needs torch: pip install 'mopt[distill]')")
    p.add_argument("--teacher", required=True, help="the original model (.onnx)")
    p.add_argument("--student", required=True, help="the model to train (.onnx), e.g. from mopt prune")
    p.add_argument("--data", required=True, metavar="DATA", help="training inputs: FILE.npy or FILE.npz:KEY")
    p.add_argument("--labels", metavar="DATA", help="labels for --data (adds a cross-entropy term)")
    p.add_argument("-o", "--output", help="distilled model path (default: STUDENT.distilled.onnx)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--holdout", type=float, default=0.125, help="fraction of --data kept out of training for the per-epoch check")
    p.add_argument("--holdout-data", metavar="DATA", help="inputs for the per-epoch check instead (when the student was pruned on --data)")
    p.add_argument("--augment", type=int, default=8, help="augmented copies (shifts + noise) of each image-like training input per epoch")
    p.add_argument("--shift", type=int, default=2, help="augmentation: random shift up to this many pixels")
    p.add_argument("--rotate", type=float, default=12.0, help="augmentation: rotation up to this many degrees (half the batch)")
    p.add_argument("--noise", type=float, default=0.05, help="augmentation: Gaussian noise, x the data's std")
    p.add_argument("--mix", type=float, default=0.3, help="augmentation: fraction of items blended with another")
    p.add_argument("--seed", type=int, default=0)
    _add_report_args(p)
    p.set_defaults(func=cmd_distill)


def _eval_data(args: argparse.Namespace, model: onnx.ModelProto) -> tuple[np.ndarray | None, np.ndarray | None]:
    from mopt.prune.report import check_data, load_array

    if bool(args.eval_inputs) != bool(args.eval_labels):
        raise InvalidArgumentError("--eval-inputs and --eval-labels go together")
    if not args.eval_inputs:
        return None, None
    x, y = load_array(args.eval_inputs), load_array(args.eval_labels)
    check_data(model, x, "--eval-inputs")
    if len(y) != len(x):
        raise InvalidArgumentError(f"--eval-labels has {len(y)} items, --eval-inputs {len(x)}")
    return x, y.astype(np.int64)


def _report(args: argparse.Namespace, models: dict[str, onnx.ModelProto], sample: np.ndarray | None) -> None:
    from mopt.prune.report import format_table, input_name, measure

    if args.no_report:
        return
    ex, ey = _eval_data(args, next(iter(models.values())))
    first = next(iter(models.values()))
    src = ex if ex is not None else sample
    if src is None:
        inp = next(i for i in first.graph.input if i.name == input_name(first))
        shape = [args.batch] + [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim[1:]]
        src = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    reps = -(-args.batch // len(src))
    batch = np.concatenate([src] * reps)[: args.batch]
    res = measure(models, batch, threads=args.threads, runs=args.runs, eval_x=ex, eval_y=ey)
    print(format_table(res, args.batch, args.threads))


def cmd_prune(args: argparse.Namespace) -> int:
    from mopt.frontend.onnx_import import load_onnx
    from mopt.prune.report import check_data, input_name, load_array
    from mopt.prune.search import prune

    model = load_onnx(args.model)
    calib = None
    if args.calibration:
        x = load_array(args.calibration)
        check_data(model, x, "--calibration")
        calib = {input_name(model): x}
    if args.sparsity is not None:
        return _cmd_prune_blocks(args, model, calib[input_name(model)] if calib else None)
    t0 = time.perf_counter()
    allocation = args.allocation or ("sensitivity" if calib else "uniform")
    if allocation != "uniform" and calib is None:
        raise InvalidArgumentError(f"--allocation {allocation} measures on data: give --calibration")
    res = prune(model, args.target_flops, calib, multiple_of=args.multiple_of, allocation=allocation, log=print)
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".pruned.onnx")
    onnx.save(res.model, str(out))
    print(f"pruned {args.model} in {time.perf_counter() - t0:.1f} s -> {out}")
    print(f"  FLOPs {res.flops_before / 1e6:.2f} M -> {res.flops_after / 1e6:.2f} M ({res.flops_after / res.flops_before:.2f}x)")
    if res.error is not None:
        print(f"  relative output error on the calibration data: {res.error:.4f}")
    for layer in res.layers:
        if layer.after != layer.before:
            print(f"  {layer.name} ({layer.op}): {layer.before} -> {layer.after} channels")
    _report(args, {"original": model, "pruned": res.model}, calib[input_name(model)] if calib else None)
    return 0


def _cmd_prune_blocks(args: argparse.Namespace, model: onnx.ModelProto, sample: np.ndarray | None) -> int:
    from mopt.lower.block_sparse import MAX_DENSITY, block_density
    from mopt.prune.magnitude import parse_block, prune_blocks

    t0 = time.perf_counter()
    res = prune_blocks(model, args.sparsity, parse_block(args.block))
    out = Path(args.output) if args.output else Path(args.model).with_suffix(".pruned.onnx")
    onnx.save(res.model, str(out))
    print(f"pruned {args.block} blocks of {args.model} in {time.perf_counter() - t0:.1f} s -> {out}")
    print(f"  {100 * res.zeroed_fraction:.1f}% of the MatMul/Gemm weights are zero")
    inits = {t.name: t for t in res.model.graph.initializer}
    for layer in res.layers:
        w = onnx.numpy_helper.to_array(inits[layer.weight])
        b = w if w.shape == layer.shape else w.T
        d = block_density(b)
        kernel = "block-sparse kernel" if d <= MAX_DENSITY else f"dense kernel (block density above {MAX_DENSITY:.2f})"
        k, n = layer.shape
        print(f"  {layer.name} ({layer.op} {k}x{n}): {layer.zeroed}/{layer.blocks} blocks zero; 1x8 density {d:.2f} -> {kernel}")
    _report(args, {"original": model, "pruned": res.model}, sample)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from mopt.frontend.onnx_import import load_onnx
    from mopt.prune.report import check_data, load_array

    try:
        from mopt.prune.distill import distill
    except ImportError as e:
        raise InvalidArgumentError(f"mopt distill needs PyTorch: pip install 'mopt[distill]' ({e})") from None
    teacher, student = load_onnx(args.teacher), load_onnx(args.student)
    x = load_array(args.data)
    check_data(student, x, "--data")
    labels = load_array(args.labels).astype(np.int64) if args.labels else None
    if labels is not None and len(labels) != len(x):
        raise InvalidArgumentError(f"--labels has {len(labels)} items, --data {len(x)}")
    held = None
    if args.holdout_data:
        held = load_array(args.holdout_data)
        check_data(student, held, "--holdout-data")
    t0 = time.perf_counter()
    trained = distill(
        teacher,
        student,
        x,
        labels,
        epochs=args.epochs,
        lr=args.lr,
        temperature=args.temperature,
        holdout=args.holdout,
        augment=args.augment,
        shift=args.shift,
        rotate=args.rotate,
        scale=0.1 if args.rotate > 0 else 0.0,
        noise=args.noise,
        mix=args.mix,
        seed=args.seed,
        threads=args.threads,
        progress=sys.stderr,
        x_holdout=held,
    )
    out = Path(args.output) if args.output else Path(args.student).with_suffix(".distilled.onnx")
    onnx.save(trained, str(out))
    print(f"distilled {args.student} in {time.perf_counter() - t0:.1f} s -> {out}")
    _report(args, {"teacher": teacher, "student": student, "distilled": trained}, x)
    return 0


def block_prune_for_compile(path: str, sparsity: float, block: str) -> onnx.ModelProto:
    """`mopt compile --sparsity`: the block-pruned model, with one summary line."""
    from mopt.frontend.onnx_import import load_onnx
    from mopt.prune.magnitude import parse_block, prune_blocks

    res = prune_blocks(load_onnx(path), sparsity, parse_block(block))
    print(f"pruned {block} blocks: {100 * res.zeroed_fraction:.1f}% of the MatMul/Gemm weights are zero")
    return res.model


def prune_for_compile(path: str, target_flops: float, calibration: str | None) -> onnx.ModelProto:
    """`mopt compile --prune`: the pruned model, with one summary line."""
    from mopt.frontend.onnx_import import load_onnx
    from mopt.prune.report import check_data, input_name, load_array
    from mopt.prune.search import prune

    model = load_onnx(path)
    calib = None
    if calibration:
        x = load_array(calibration)
        check_data(model, x, "--calibration")
        calib = {input_name(model): x}
    res = prune(model, target_flops, calib)
    print(f"pruned channels: FLOPs {res.flops_before / 1e6:.2f} M -> {res.flops_after / 1e6:.2f} M ({res.flops_after / res.flops_before:.2f}x)")
    return res.model
