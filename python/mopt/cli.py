"""The mopt command line: compile, run, inspect, bench, demo."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import mopt
from mopt import _C
from mopt.errors import InvalidArgumentError, MoptError


def _level(args: argparse.Namespace) -> int:
    return int(args.level)


def _add_level(p: argparse.ArgumentParser, default: int = 2) -> None:
    p.add_argument("-O", dest="level", type=int, choices=[0, 1, 2, 3], default=default, help=f"optimization level (default {default})")


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--isa", choices=_C.available_isas(), default=None, help="cap the kernel ISA (default: best, or $MOPT_ISA)")


def _parse_dims(items: list[str] | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    for it in items or []:
        if "=" not in it:
            raise InvalidArgumentError(f"--dim takes NAME=SIZE, got '{it}'")
        k, v = it.split("=", 1)
        try:
            dims[k] = int(v)
        except ValueError:
            raise InvalidArgumentError(f"--dim {k}: '{v}' is not an integer") from None
    return dims


def random_feeds(sess: mopt.Session, dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every model input; symbolic dimensions from `dims` (default 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for a in sess.get_inputs():
        shape = [d if isinstance(d, int) else (dims or {}).get(str(d), 1) for d in (a.shape or [])]
        if a.dtype.kind == "f":
            feeds[a.name] = rng.standard_normal(shape).astype(a.dtype)
        elif a.dtype.kind in "iu":
            feeds[a.name] = rng.integers(0, 100, shape).astype(a.dtype)
        elif a.dtype.kind == "b":
            feeds[a.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InvalidArgumentError(f"cannot make random data for input '{a.name}' of type {a.type}")
    return feeds


def _load_feeds(sess: mopt.Session, items: list[str] | None, dims: dict[str, int]) -> dict[str, np.ndarray]:
    if not items:
        return random_feeds(sess, dims)
    feeds: dict[str, np.ndarray] = {}
    names = [a.name for a in sess.get_inputs()]
    for it in items:
        if "=" in it:
            name, path = it.split("=", 1)
        elif len(names) == 1:
            name, path = names[0], it
        else:
            raise InvalidArgumentError(f"--input takes NAME=FILE.npy when the model has several inputs ({', '.join(names)})")
        if path.endswith(".npz"):
            with np.load(path) as z:
                feeds.update({k: z[k] for k in z.files})
        else:
            feeds[name] = np.load(path)
    return feeds


# -- commands ---------------------------------------------------------------------------------------
def _check_precision(args: argparse.Namespace) -> None:
    if getattr(args, "fp16_activations", False):
        args.fp16 = True  # implies --fp16
        if getattr(args, "emit_onnx", None):
            raise InvalidArgumentError("--emit-onnx writes a model with float16 weights only; it does not go with "
                                       "--fp16-activations")
    chosen = [f for f in ("int8", "dynamic", "fp16") if getattr(args, f, False)]
    if len(chosen) > 1:
        raise InvalidArgumentError(f"choose one of --int8, --dynamic and --fp16 (got {', '.join('--' + c for c in chosen)})")
    if getattr(args, "fp16", False) and args.calibration and not getattr(args, "fp16_activations", False):
        raise InvalidArgumentError("--fp16 takes no --calibration: it stores the weights as float16, no ranges needed "
                                   "(with --fp16-activations, the data finds the values out of float16's range)")


def _f16_values(cm: Any) -> int:
    """How many computed values of a program are float16."""
    return sum(1 for v in cm.program["graph"]["values"] if "const" not in v and v.get("dtype") == 10)


def _emit_fp16_onnx(src: Path, path: str) -> None:
    import onnx

    from mopt.quant.export import export_fp16

    onnx.save(export_fp16(str(src)), path)
    print(f"ONNX model with float16 weights (for ONNX Runtime and other runtimes) -> {path}")


def cmd_compile(args: argparse.Namespace) -> int:
    _check_precision(args)
    if args.prune is not None and (args.int8 or args.dynamic):
        raise InvalidArgumentError("--prune with --int8/--dynamic: prune first (mopt prune), then quantize the pruned model")
    if args.sparsity is not None and (args.prune is not None or args.int8 or args.dynamic):
        raise InvalidArgumentError("--sparsity goes alone: prune channels or quantize in a separate step (mopt prune / mopt quantize)")
    if args.int8 or args.dynamic or (args.fp16_activations and args.calibration):
        return cmd_quantize(args)
    if args.emit_onnx and not args.fp16:
        raise InvalidArgumentError("--emit-onnx goes with --int8, --dynamic or --fp16")
    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".mopt")
    t0 = time.perf_counter()
    model: Any = str(src)
    if args.prune is not None:
        from mopt.prune.cli import prune_for_compile

        model = prune_for_compile(model, args.prune, args.prune_calibration)
    if args.sparsity is not None:
        from mopt.prune.cli import block_prune_for_compile

        model = block_prune_for_compile(model, args.sparsity, args.block)
    cm = mopt.compile(
        model,
        _level(args),
        isa=args.isa,
        fallback=not args.no_fallback,
        print_changes=args.print_changes,
        explain=args.explain,
        sparse_max_density=args.sparse_max_density,
        fp16=args.fp16,
        fp16_activations=args.fp16_activations,
        winograd=not args.no_winograd,
    )
    size = cm.save(str(out))
    dt = time.perf_counter() - t0
    n_nodes = len(cm.program["graph"]["nodes"])
    weights = " (weights stored as float16, computed in float32)" if cm.fp16 else ""
    if args.fp16_activations:
        weights = f" (weights and {_f16_values(cm)} activations stored as float16, computed in float32)"
    print(f"compiled {src} at -O{cm.level} for {cm.isa}: {n_nodes} kernel calls, {size / 1e6:.1f} MB{weights} -> {out} ({dt:.2f} s)")
    if not (args.print_changes or args.explain):  # those print the choices already
        for c in cm.sparse_choices:
            print(f"block-sparse: {c.describe()}")
    if args.fp16 and args.emit_onnx:
        _emit_fp16_onnx(src, args.emit_onnx)
    if cm.fallback_nodes:
        print(f"WARNING: {len(cm.fallback_nodes)} node(s) run on the Python reference fallback (slow): {cm.fallback_summary()}")
        for p in cm.fallback_nodes[:10]:
            print(f"  '{p.node}' ({p.op}): {p.reason}")
        print("  (use --no-fallback to make this an error)")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """mopt quantize (and mopt compile --int8/--dynamic): int8 program, per-layer error table; or,
    with --fp16, a program whose weights are stored as float16."""
    from mopt.quant import quantize

    _check_precision(args)
    src = Path(args.model)
    if args.fp16:
        out = Path(args.output) if args.output else src.with_suffix(".fp16.mopt")
        res = quantize(str(src), args.calibration, mode="fp16", isa=args.isa, fp16_activations=args.fp16_activations,
                       show_progress=not args.quiet)
        size = res.compiled.save(str(out))
        values = res.compiled.program["graph"]["values"]
        n_half = sum(1 for v in values if v.get("const", {}).get("storage") == "f16" or ("const" in v and v["dtype"] == 10))
        acts = f", {_f16_values(res.compiled)} activations" if args.fp16_activations else ""
        print(f"quantized {src} (fp16: {n_half} weight tensors{acts} stored as float16, computed in float32) for "
              f"{res.compiled.isa}: {size / 1e6:.2f} MB -> {out} ({res.seconds:.1f} s)")
        if res.skipped:
            print(f"kept float32 (out of float16's range on the calibration data): {', '.join(res.skipped)}")
        elif args.fp16_activations and not args.calibration:
            print("note: no --calibration given, so no value was checked against float16's range (±65504, "
                  "normals from 6e-5): compare with fp32 on your inputs")
        if args.emit_onnx:
            _emit_fp16_onnx(src, args.emit_onnx)
        return 0
    out = Path(args.output) if args.output else src.with_suffix(".int8.mopt")
    dynamic = bool(getattr(args, "dynamic", False))
    if not dynamic and not args.calibration:
        raise InvalidArgumentError("static int8 needs --calibration DATA (.npz/.npy or a folder), or use --dynamic")
    res = quantize(str(src), args.calibration, mode="dynamic" if dynamic else "static", method=args.method,
                   max_accuracy_drop=args.max_accuracy_drop, isa=args.isa, show_progress=not args.quiet)
    print(res.table())
    kept = [r.name for r in res.layers if r.float_reason]
    if kept:
        print(f"kept in fp32 for accuracy: {', '.join(kept)}")
    size = res.compiled.save(str(out))
    n_int8 = sum(1 for n in res.compiled.program["graph"]["nodes"] if n["op"] in ("QConv", "QMatMul"))
    print(f"quantized {src} ({res.mode}, {n_int8} int8 layers) for {res.compiled.isa}: {size / 1e6:.2f} MB -> {out} ({res.seconds:.1f} s)")
    if getattr(args, "emit_onnx", None):
        import onnx

        from mopt.quant.export import export_qdq

        onnx.save(export_qdq(res.compiled.graph), args.emit_onnx)  # type: ignore[arg-type]
        print(f"QDQ ONNX model (for ONNX Runtime and other runtimes) -> {args.emit_onnx}")
    return 0


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", help="calibration data: .npz (arrays by input name), .npy, or a folder of them")
    p.add_argument("--dynamic", action="store_true", help="int8 weights, activations quantized at run time (no data)")
    p.add_argument("--fp16", action="store_true",
                   help="store the weights as float16 (half the program; no data needed). They are widened to float32 "
                        "when the program loads and every kernel computes in float32; activations stay float32")
    p.add_argument("--fp16-activations", action="store_true",
                   help="with --fp16 (implied): also store the activations between the ops that take float16 as "
                        "float16 (half their memory; arithmetic stays float32). With --calibration, ops whose outputs "
                        "leave float16's range on that data stay float32; without, such values are lost")
    p.add_argument("--method", choices=["minmax", "percentile", "entropy", "mse"], default="minmax", help="range method")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="keep the worst layers fp32 until the top-1 agreement loss (points) is within this")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--emit-onnx", metavar="PATH",
                   help="also write a standard ONNX model: QDQ for int8, float16 weights behind Casts for --fp16")


def _session(args: argparse.Namespace) -> mopt.Session:
    kw: dict[str, Any] = {"intra_op_threads": args.threads, "isa": args.isa}
    if not str(args.model).endswith(".mopt"):
        kw["level"] = _level(args)
    return mopt.Session(args.model, **kw)


def cmd_run(args: argparse.Namespace) -> int:
    sess = _session(args)
    feeds = _load_feeds(sess, args.input, _parse_dims(args.dim))
    t0 = time.perf_counter()
    outs = sess.run(None, feeds)
    dt = time.perf_counter() - t0
    for arg, y in zip(sess.get_outputs(), outs, strict=True):
        stats = ""
        if y.size and y.dtype.kind in "fiub":
            yf = y.astype(np.float64)
            stats = f" min={yf.min():.6g} max={yf.max():.6g} mean={yf.mean():.6g}"
        print(f"{arg.name}: {y.dtype} {list(y.shape)}{stats}")
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            np.save(os.path.join(args.output_dir, f"{arg.name.replace('/', '_')}.npy"), y)
    print(f"ran in {dt * 1e3:.2f} ms (first run: includes memory planning)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from mopt.lower import mopt_format
    from mopt.report import graph_report

    path = str(args.model)
    if mopt_format.is_mopt_file(path):
        head = mopt_format.read_header(path)
        prog = head["program"]
        n_half = sum(1 for v in prog["graph"]["values"] if v.get("const", {}).get("storage") == "f16")
        half = f" ({n_half} tensors stored as float16, widened to float32 at load)" if n_half else ""
        print(
            f"{path}: mopt program format {head['version']}, weights packed for {prog.get('isa')}, "
            f"{head['blob_size'] / 1e6:.1f} MB of weights{half}"
        )
        sess = mopt.Session(path, intra_op_threads=args.threads, isa=args.isa)
    else:
        cm = mopt.compile(path, _level(args), isa=args.isa)
        rep = graph_report(cm.graph)  # type: ignore[arg-type]
        print(f"{path} at -O{cm.level}: {rep.nodes} nodes")
        print(f"  parameters: {rep.parameters:,} ({rep.parameter_bytes / 1e6:.1f} MB)")
        flops = f"{rep.flops / 1e9:.3f} GFLOPs" + ("" if rep.flops_complete else " (Conv/Gemm/MatMul with static shapes only)")
        print(f"  FLOPs per run: {flops}")
        print("  inputs:  " + "; ".join(rep.inputs))
        print("  outputs: " + "; ".join(rep.outputs))
        print("  ops:     " + ", ".join(f"{k} x{v}" for k, v in rep.ops.items()))
        if cm.fallback_nodes:
            print(f"  fallback (Python reference): {cm.fallback_summary()}")
        sess = mopt.Session(cm, intra_op_threads=args.threads, isa=args.isa)
    print(f"  runtime: isa={sess.isa} threads={sess.num_threads}")
    hist: dict[str, int] = {}
    for _, op, impl in sess.kernels():
        key = f"{op} -> {impl}"
        hist[key] = hist.get(key, 0) + 1
    print("  kernels:")
    for k, v in sorted(hist.items(), key=lambda kv: -kv[1]):
        print(f"    {v:4d} x {k}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mopt.bench import format_ms, measure_all, ort_session, stderr_if_tty, table

    threads = args.threads or os.cpu_count() or 1
    dims = _parse_dims(args.dim)
    t0 = time.perf_counter()
    sess = (
        mopt.Session(args.model, level=_level(args), intra_op_threads=threads, isa=args.isa)
        if not str(args.model).endswith(".mopt")
        else mopt.Session(args.model, intra_op_threads=threads, isa=args.isa)
    )
    load = {"mopt": time.perf_counter() - t0}
    feeds = random_feeds(sess, dims)
    fns = {"mopt": lambda: sess.run(None, feeds)}
    if args.compare == "onnxruntime":
        if str(args.model).endswith(".mopt"):
            raise InvalidArgumentError("--compare onnxruntime needs the .onnx model")
        try:
            t0 = time.perf_counter()
            ort = ort_session(str(args.model), threads)
            load["onnxruntime"] = time.perf_counter() - t0
        except ImportError:
            raise InvalidArgumentError("--compare onnxruntime needs onnxruntime: pip install onnxruntime") from None
        fns["onnxruntime"] = lambda: ort.run(None, feeds)
        ref = ort.run(None, feeds)
        got = sess.run(None, feeds)
        worst = max(
            float(np.abs(g.astype(np.float64) - r).max() / (np.abs(r).max() + 1e-30)) if g.size else 0.0
            for g, r in zip(got, ref, strict=True)
        )
        print(f"agreement: max |mopt - onnxruntime| / max|onnxruntime| = {worst:.2e}")
    res = measure_all(fns, runs=args.runs, warmup=args.warmup, loads=load, progress=stderr_if_tty())
    batch = next((int(v.shape[0]) for v in feeds.values() if v.ndim > 0), 1)
    rows = []
    for k, t in res.items():
        rows.append([k, f"{t.load_s * 1e3:.1f}", format_ms(t.p50), format_ms(t.p90), format_ms(t.p99), f"{t.throughput(batch):.1f}"])
    print(f"{args.model}: {threads} thread(s), {args.runs} runs after {args.warmup} warm-up")
    print(table(rows, ["runtime", "load ms", "p50 ms", "p90 ms", "p99 ms", "items/s"]))
    if "onnxruntime" in res:
        ratio = res["onnxruntime"].p50 / res["mopt"].p50
        print(f"speed-up (onnxruntime p50 / mopt p50): {ratio:.2f}x")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Compiles a CNN that ships inside the onnx wheel and runs it beside ONNX Runtime."""
    import onnx

    from mopt.bench import format_ms, measure_all, ort_session, table
    from mopt.testing.models import arange_input, expose_logits, light_path, randomize_weights

    name = args.model
    path = light_path(name)
    if not path.exists():
        raise InvalidArgumentError(f"{path} is not in this onnx wheel")
    print(f"mopt demo: {name} from the onnx wheel, weights made random (seed 0) so the outputs mean something")
    model = expose_logits(randomize_weights(onnx.load(str(path)), seed=0))
    input_name, x = arange_input(model)
    threads = args.threads or os.cpu_count() or 1
    t0 = time.perf_counter()
    cm = mopt.compile(model, 2)
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    sess = mopt.Session(cm, intra_op_threads=threads)
    t_load = time.perf_counter() - t0
    print(
        f"compiled at -O2 in {t_compile:.2f} s ({len(cm.program['graph']['nodes'])} kernel calls, isa {sess.isa}, "
        f"{threads} threads); session ready in {t_load * 1e3:.1f} ms"
    )
    ys = sess.run(None, {input_name: x})
    fns = {"mopt": lambda: sess.run(None, {input_name: x})}
    loads = {"mopt": t_load}
    try:
        t0 = time.perf_counter()
        ort = ort_session(model, threads)
        loads["onnxruntime"] = time.perf_counter() - t0
        refs = ort.run(None, {input_name: x})
        for arg, y, ref in zip(sess.get_outputs(), ys, refs, strict=True):
            err = float(np.abs(y - ref).max())
            tol = 1e-4 * float(np.abs(ref).max()) + 1e-5
            print(
                f"agreement with onnxruntime on '{arg.name}' {list(ref.shape)}: max abs error {err:.3g} "
                f"(tolerance {tol:.3g}: {'OK' if err <= tol else 'MISMATCH'})"
            )
        logits, ref_logits = ys[-1].ravel(), refs[-1].ravel()
        top_m = [int(i) for i in np.argsort(-logits)[:5]]
        top_o = [int(i) for i in np.argsort(-ref_logits)[:5]]
        print(f"top-5 classes: mopt {top_m}, onnxruntime {top_o} ({'agree' if top_m == top_o else 'DIFFER'})")
        fns["onnxruntime"] = lambda: ort.run(None, {input_name: x})
    except ImportError:
        print("onnxruntime is not installed: showing mopt alone (pip install onnxruntime to compare)")
    res = measure_all(fns, runs=args.runs, warmup=3, loads=loads)
    rows = [[k, f"{t.load_s * 1e3:.1f}", format_ms(t.p50), format_ms(t.p90)] for k, t in res.items()]
    print(table(rows, ["runtime", "load ms", "p50 ms", "p90 ms"]))
    if "onnxruntime" in res:
        print(f"mopt vs onnxruntime (p50): {res['onnxruntime'].p50 / res['mopt'].p50:.2f}x")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mopt", description="mopt: compile ONNX models to fast native programs.")
    ap.add_argument("--version", action="version", version=f"mopt {mopt.__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model to model.mopt")
    p.add_argument("model")
    _add_level(p)
    p.add_argument("-o", "--output", help="output path (default: MODEL with .mopt)")
    p.add_argument("--isa", choices=_C.available_isas(), default=None, help="ISA to pack weights for")
    p.add_argument("--no-fallback", action="store_true", help="fail on ops without a native kernel")
    p.add_argument("--print-changes", action="store_true", help="print what each pass changed")
    p.add_argument("--explain", action="store_true", help="also print why rules did not apply")
    p.add_argument("--no-winograd", action="store_true",
                   help="-O3 without Winograd convolutions (a smaller program: their filters take 4x the bytes)")
    p.add_argument("--int8", action="store_true", help="quantize to int8 (static; needs --calibration)")
    _add_quant_args(p)
    p.add_argument("--prune", type=float, metavar="FLOPS", help="first prune channels down to this fraction of the FLOPs")
    p.add_argument("--prune-calibration", metavar="DATA", help="with --prune: inputs (FILE.npy, FILE.npz:KEY) for channel importance")
    p.add_argument("--sparsity", type=float, default=None, help="first zero this fraction of each MatMul/Gemm weight's blocks (by norm)")
    p.add_argument("--block", default="1x8", help="with --sparsity: block INPUTSxOUTPUTS (default 1x8)")
    p.add_argument(
        "--sparse-max-density",
        type=float,
        default=None,
        help="block density at or below which a MatMul/Gemm weight runs the block-sparse kernel (default: the measured bar; 0: never)",
    )
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("quantize", help="int8 model.mopt from calibration data (or --dynamic)")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="output path (default: MODEL with .int8.mopt)")
    p.add_argument("--isa", choices=_C.available_isas(), default=None, help="ISA to pack weights for")
    _add_quant_args(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("run", help="run a model (.onnx or .mopt) once")
    p.add_argument("model")
    _add_level(p)
    _add_runtime(p)
    p.add_argument("--input", action="append", help="NAME=FILE.npy (or FILE.npz); random data when omitted")
    p.add_argument("--dim", action="append", help="NAME=SIZE for a symbolic dimension of random inputs")
    p.add_argument("--output-dir", help="save each output as NAME.npy here")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="ops, parameters, FLOPs, kernels and ISA of a model")
    p.add_argument("model")
    _add_level(p)
    _add_runtime(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("bench", help="latency and throughput, optionally beside ONNX Runtime")
    p.add_argument("model")
    _add_level(p, default=3)
    _add_runtime(p)
    p.add_argument("--compare", choices=["onnxruntime"], default=None)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dim", action="append", help="NAME=SIZE for a symbolic dimension of the random inputs")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="compile and run a CNN shipped in the onnx wheel, beside ONNX Runtime")
    p.add_argument("--model", default="light_resnet50", help="a light_* model of onnx/backend/test/data/light")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", type=int, default=20)
    p.set_defaults(func=cmd_demo)

    from mopt.prune.cli import add_parsers as add_prune_parsers

    add_prune_parsers(sub)  # prune, distill
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MoptError as e:
        print(f"mopt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
