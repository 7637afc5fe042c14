"""Architectures mopt was not tuned on: small Hugging Face models exported here, checked and timed against ORT.

    pip install torch==2.13.0 transformers           # CPU torch; neither is a mopt dependency
    python benchmarks/models/zoo_vs_ort.py --out /tmp/zoo                 # export, then check every model
    python benchmarks/models/zoo_vs_ort.py --out /tmp/zoo --time llama_dynamo t5enc_legacy

Each architecture (2 layers, hidden 128, random weights) is exported twice, by torch.onnx's dynamo
exporter (opset 18) and by its TorchScript one (opset 17): the two write different shape arithmetic,
norms and masks. Every model is compiled at -O3 and -O0 and compared with ONNX Runtime at
(batch, sequence) 1x1, 1x7, 3x17 and 2x64, padded rows in the attention mask (images: batch 1
and 3), with the issue #4 bound: max abs error <= 1e-4 * max|ref| + 1e-5. --time adds p50 latency
at 1x128 and 8x128 against ORT (ORT_ENABLE_ALL), same thread count, blocks taking turns.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx

import mopt
from mopt.bench import measure_all, ort_session

VOCAB = 1000


def architectures():
    import torch
    import transformers as hf

    class Text(torch.nn.Module):
        def __init__(self, m, logits: bool):
            super().__init__()
            self.m, self.logits = m, logits

        def forward(self, input_ids, attention_mask):
            o = self.m(input_ids=input_ids, attention_mask=attention_mask)
            return o.logits if self.logits else o.last_hidden_state

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            o = self.m(pixel_values=pixel_values)
            return o.logits if hasattr(o, "logits") else o.last_hidden_state

    class Seq2Seq(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, decoder_input_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits

    small = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": VOCAB}
    no_cache = {"use_cache": False}
    return {
        "distilbert": (
            "text",
            lambda: Text(hf.DistilBertModel(hf.DistilBertConfig(dim=128, n_layers=2, n_heads=4, hidden_dim=256, vocab_size=VOCAB)), False),
        ),
        "roberta": ("text", lambda: Text(hf.RobertaModel(hf.RobertaConfig(**small), add_pooling_layer=False), False)),
        "albert": ("text", lambda: Text(hf.AlbertModel(hf.AlbertConfig(embedding_size=64, **small), add_pooling_layer=False), False)),
        "electra": ("text", lambda: Text(hf.ElectraModel(hf.ElectraConfig(embedding_size=64, **small)), False)),
        "mobilebert": (
            "text",
            lambda: Text(
                hf.MobileBertModel(
                    hf.MobileBertConfig(
                        hidden_size=128,
                        num_hidden_layers=2,
                        num_attention_heads=4,
                        intermediate_size=256,
                        embedding_size=64,
                        intra_bottleneck_size=64,
                        true_hidden_size=64,
                        vocab_size=VOCAB,
                    ),
                    add_pooling_layer=False,
                ),
                False,
            ),
        ),
        "t5enc": (
            "text",
            lambda: Text(
                hf.T5EncoderModel(hf.T5Config(d_model=128, d_ff=256, num_layers=2, num_heads=4, d_kv=32, vocab_size=VOCAB)), False
            ),
        ),
        "gptneo": (
            "text",
            lambda: Text(
                hf.GPTNeoForCausalLM(
                    hf.GPTNeoConfig(
                        hidden_size=128,
                        num_layers=2,
                        num_heads=4,
                        attention_types=[[["global", "local"], 1]],
                        window_size=8,
                        vocab_size=VOCAB,
                        **no_cache,
                    )
                ),
                True,
            ),
        ),
        "gptj": (
            "text",
            lambda: Text(
                hf.GPTJForCausalLM(hf.GPTJConfig(n_embd=128, n_layer=2, n_head=4, rotary_dim=16, vocab_size=VOCAB, **no_cache)), True
            ),
        ),
        "opt": (
            "text",
            lambda: Text(
                hf.OPTForCausalLM(
                    hf.OPTConfig(
                        hidden_size=128,
                        num_hidden_layers=2,
                        num_attention_heads=4,
                        ffn_dim=256,
                        word_embed_proj_dim=128,
                        vocab_size=VOCAB,
                        **no_cache,
                    )
                ),
                True,
            ),
        ),
        "bloom": (
            "text",
            lambda: Text(hf.BloomForCausalLM(hf.BloomConfig(hidden_size=128, n_layer=2, n_head=4, vocab_size=VOCAB, **no_cache)), True),
        ),
        "llama": ("text", lambda: Text(hf.LlamaForCausalLM(hf.LlamaConfig(num_key_value_heads=2, **no_cache, **small)), True)),
        "qwen2": ("text", lambda: Text(hf.Qwen2ForCausalLM(hf.Qwen2Config(num_key_value_heads=2, **no_cache, **small)), True)),
        "phi": ("text", lambda: Text(hf.PhiForCausalLM(hf.PhiConfig(**no_cache, **small)), True)),
        "deit": (
            "image",
            lambda: Image(
                hf.DeiTModel(
                    hf.DeiTConfig(
                        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=64, patch_size=8
                    ),
                    add_pooling_layer=False,
                )
            ),
        ),
        "swin": (
            "image",
            lambda: Image(
                hf.SwinForImageClassification(
                    hf.SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1, 1], num_heads=[2, 4], window_size=4)
                )
            ),
        ),
        "bart": (
            "seq2seq",
            lambda: Seq2Seq(
                hf.BartForConditionalGeneration(
                    hf.BartConfig(
                        d_model=128,
                        encoder_layers=1,
                        decoder_layers=1,
                        encoder_attention_heads=4,
                        decoder_attention_heads=4,
                        encoder_ffn_dim=256,
                        decoder_ffn_dim=256,
                        vocab_size=VOCAB,
                        **no_cache,
                    )
                )
            ),
        ),
    }


def export_all(out: str, only: list[str]) -> None:
    import torch
    from torch.export import Dim

    torch.manual_seed(0)
    os.makedirs(out, exist_ok=True)
    batch, seq, dseq = Dim("batch", min=1, max=64), Dim("seq", min=1, max=512), Dim("dseq", min=1, max=512)
    ids = torch.randint(0, VOCAB, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    for name, (kind, make) in architectures().items():
        if only and name not in only:
            continue
        if kind == "image":
            args, names = (torch.randn(2, 3, 64, 64),), ["pixel_values"]
            axes = {"pixel_values": {0: batch}}
        elif kind == "seq2seq":
            args, names = (ids, mask, ids[:, :9]), ["input_ids", "attention_mask", "decoder_input_ids"]
            axes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}, "decoder_input_ids": {0: batch, 1: dseq}}
        else:
            args, names = (ids, mask), ["input_ids", "attention_mask"]
            axes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        named = {k: {a: d.__name__ for a, d in v.items()} for k, v in axes.items()}
        for dynamo in (True, False):
            tag = f"{name}_{'dynamo' if dynamo else 'legacy'}"
            path = os.path.join(out, tag + ".onnx")
            if os.path.exists(path):
                continue
            t = time.perf_counter()
            try:
                model = make().eval()
                with torch.no_grad():
                    if dynamo:
                        torch.onnx.export(
                            model,
                            args,
                            path,
                            input_names=names,
                            output_names=["y"],
                            dynamic_shapes=axes,
                            opset_version=18,
                            dynamo=True,
                            external_data=False,
                        )
                    else:
                        torch.onnx.export(
                            model,
                            args,
                            path,
                            input_names=names,
                            output_names=["y"],
                            dynamic_axes={**named, "y": {0: "batch"}},
                            opset_version=17,
                            dynamo=False,
                        )
                print(f"exported {tag} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            except Exception as e:  # an exporter failure is the exporter's, not mopt's: report and go on
                print(f"could not export {tag}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", file=sys.stderr)


def feeds_for(model: onnx.ModelProto, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        if i.name == "pixel_values":
            feeds[i.name] = rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)
        elif i.name == "attention_mask":  # row r > 0 has its last 3r positions padded (at least one stays visible)
            m = np.ones((batch, seq), np.int64)
            for r in range(1, batch):
                m[r, max(1, seq - 3 * r) :] = 0
            feeds[i.name] = m
        elif i.name == "decoder_input_ids":
            feeds[i.name] = rng.integers(0, VOCAB, (batch, seq // 2 + 1)).astype(np.int64)
        else:
            feeds[i.name] = rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)
    return feeds


def sizes_of(model: onnx.ModelProto) -> list[tuple[int, int]]:
    image = any(i.name == "pixel_values" for i in model.graph.input)
    return [(1, 0), (3, 0)] if image else [(1, 1), (1, 7), (3, 17), (2, 64)]


def check(path: str, threads: int) -> bool:
    name = os.path.basename(path)[:-5]
    model = onnx.load(path)
    t = time.perf_counter()
    c3 = mopt.compile(path, 3)
    compile_s = time.perf_counter() - t
    sessions = {"-O3": mopt.Session(c3, intra_op_threads=threads), "-O0": mopt.Session(mopt.compile(path, 0), intra_op_threads=threads)}
    ort = ort_session(path, threads)
    worst, bad = 0.0, []
    for b, s in sizes_of(model):
        feeds = feeds_for(model, b, s)
        want = ort.run(None, feeds)
        for level, sess in sessions.items():
            for g, w in zip(sess.run(None, feeds), want, strict=True):
                g = np.asarray(g)
                if g.shape != w.shape:
                    bad.append(f"{level} {b}x{s}: shape {g.shape}, ORT {w.shape}")
                    continue
                if w.size == 0:
                    continue
                err = float(np.max(np.abs(g.astype(np.float64) - w)))
                bound = 1e-4 * float(np.max(np.abs(w))) + 1e-5
                worst = max(worst, err / bound)
                if not err <= bound:
                    bad.append(f"{level} {b}x{s}: max abs error {err:.3g} > {bound:.3g}")
    print(
        f"{'ok ' if not bad else 'BAD'} {name:22s} compile {compile_s:5.2f} s  fallback nodes {len(c3.fallback_nodes)}  "
        f"worst error / bound {worst:.3f}  {'; '.join(bad[:3])}"
    )
    return not bad


def time_model(path: str, threads: int, runs: int) -> None:
    name = os.path.basename(path)[:-5]
    model = onnx.load(path)
    sess = mopt.Session(mopt.compile(path, 3), intra_op_threads=threads)
    ort = ort_session(path, threads)
    for b, s in [(1, 0), (8, 0)] if sizes_of(model)[0][1] == 0 else [(1, 128), (8, 128)]:
        feeds = feeds_for(model, b, s)
        t = measure_all(
            {"mopt": lambda f=feeds: sess.run(None, f), "ort": lambda f=feeds: ort.run(None, f)}, runs=runs, warmup=3, loads={}, rounds=5
        )
        m, o = t["mopt"].p50 * 1e3, t["ort"].p50 * 1e3
        print(f"{name:22s} {b}x{s or '-':<4} mopt {m:8.2f} ms  ORT {o:8.2f} ms  ORT/mopt {o / m:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the exported models (kept: a second run exports nothing)")
    ap.add_argument("--only", nargs="*", default=[], help="architectures to export (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", nargs="*", default=None, help="models (file stems) to time at 1x128 and 8x128; none named: all")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        export_all(args.out, args.only)
    except ImportError as e:
        print(f"exporting needs torch and transformers ({e}); checking what {args.out} already holds", file=sys.stderr)
    paths = sorted(os.path.join(args.out, f) for f in os.listdir(args.out) if f.endswith(".onnx")) if os.path.isdir(args.out) else []
    if not paths:
        print(f"no models in {args.out}", file=sys.stderr)
        return 1
    ok = all([check(p, args.threads) for p in paths])
    if args.time is not None:
        for p in paths:
            if not args.time or os.path.basename(p)[:-5] in args.time:
                time_model(p, args.threads, args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
