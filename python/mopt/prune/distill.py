"""Knowledge distillation: fine-tune a (pruned) student ONNX model to match its teacher's outputs.

Soft targets come from the teacher on every (augmented) batch: KL divergence at temperature T
for [items, classes] outputs, mean squared error otherwise, plus cross-entropy when labels are
given. Part of the data is held out and checked after every epoch; the weights of the best
epoch on that check are the ones written back. Needs PyTorch (pip install 'mopt[distill]').
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from mopt.errors import InvalidArgumentError
from mopt.prune.torch_module import OnnxModule


def _augment(
    x: torch.Tensor, gen: torch.Generator, shift: int, noise: float, rotate: float = 12.0, scale: float = 0.1, mix: float = 0.3
) -> torch.Tensor:
    """Image-like batches [N, C, H, W]: a random small affine warp (shift up to `shift` pixels,
    rotation up to `rotate` degrees, scale within 1 +- `scale`, zero fill), Gaussian noise, and
    mixing with another image of the batch (the teacher labels the blend, so any blend is data)."""
    if x.dim() == 4 and (shift > 0 or rotate > 0 or scale > 0):
        n, _, h, w = x.shape
        u = lambda: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731
        warp = (torch.rand(n, generator=gen) < 0.5).float()  # half the batch only shifted
        ang, sc = u() * warp * rotate * math.pi / 180, 1 + u() * warp * scale
        tx = torch.randint(-shift, shift + 1, (n,), generator=gen) * 2.0 / w  # whole pixels
        ty = torch.randint(-shift, shift + 1, (n,), generator=gen) * 2.0 / h
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=gen)
    lam = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen) * 0.4
    mix = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen) < mix).float() * lam
    perm = torch.randperm(x.shape[0], generator=gen)
    return (1 - mix) * x + mix * x[perm]


def _loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    if s.dim() == 2:
        return F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1), reduction="batchmean", log_target=True) * (
            temperature**2
        )
    return F.mse_loss(s, t)


def _bar(stream: TextIO | None, text: str, done: float, end: bool = False) -> None:
    if stream is None:
        return
    if not (hasattr(stream, "isatty") and stream.isatty()):
        if end:  # a log file gets one line per epoch, not the redraws
            stream.write(text + "\n")
            stream.flush()
        return
    width = 24
    fill = int(round(done * width))
    stream.write(f"\r{text} [{'#' * fill}{'.' * (width - fill)}]" + ("\n" if end else ""))
    stream.flush()


def distill(
    teacher: onnx.ModelProto,
    student: onnx.ModelProto,
    x: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    epochs: int = 30,
    lr: float = 2e-3,
    temperature: float = 4.0,
    holdout: float = 0.125,
    augment: int = 8,
    batch_size: int = 64,
    label_weight: float = 0.3,
    shift: int = 2,
    noise: float = 0.05,
    rotate: float = 12.0,
    scale: float = 0.1,
    mix: float = 0.3,
    seed: int = 0,
    threads: int | None = None,
    progress: TextIO | None = sys.stderr,
    log: Any = print,
    x_holdout: np.ndarray | None = None,
) -> onnx.ModelProto:
    """The student with weights trained to match the teacher on `x` (items along axis 0).

    x_holdout: the items of the per-epoch check (default: `holdout` of `x`, kept out of training).
    Give it explicitly when the student was pruned/refit on `x`: items it was fit on say nothing.
    """
    if epochs < 1:
        raise InvalidArgumentError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < holdout < 1.0:
        raise InvalidArgumentError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if len(x) < 4:
        raise InvalidArgumentError(f"distillation needs at least 4 training items, got {len(x)}")
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(threads or 2, 2)))
    t_mod, s_mod = OnnxModule(teacher), OnnxModule(student)
    t_mod.eval()
    if not s_mod.names:
        raise InvalidArgumentError("the student has no float weights to train")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    if x_holdout is None:
        cut = max(1, int(round(holdout * len(x))))
        hold, keep = torch.from_numpy(x[perm[:cut]]), perm[cut:]
    else:
        hold, keep = torch.from_numpy(np.ascontiguousarray(x_holdout)), perm
    n_hold = len(hold)
    train = torch.from_numpy(x[keep])
    y_train = torch.from_numpy(labels[keep]) if labels is not None else None
    noise_abs = noise * float(train.std())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t_hold = t_mod(hold)[0]

    def held_out() -> tuple[float, float]:
        with torch.no_grad():
            s = s_mod(hold)[0]
        agree = float((s.argmax(1) == t_hold.argmax(1)).float().mean()) if s.dim() == 2 else float("nan")
        return float(_loss(s, t_hold, temperature)), agree

    loss0, agree0 = held_out()
    log(f"held-out ({n_hold} items) before: loss {loss0:.4f}, top-1 agreement with the teacher {100 * agree0:.1f}%")
    best = (loss0, [p.detach().clone() for p in s_mod.weights])
    opt = torch.optim.Adam(s_mod.weights, lr=lr)
    steps_per_epoch = max(1, math.ceil(len(train) * augment / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    for ep in range(epochs):
        idx = torch.cat([torch.randperm(len(train), generator=gen) for _ in range(augment)])
        total = 0.0
        for step in range(steps_per_epoch):
            b = idx[step * batch_size : (step + 1) * batch_size]
            if len(b) == 0:
                break
            xb = _augment(train[b], gen, shift, noise_abs, rotate, scale, mix)
            with torch.no_grad():
                tb = t_mod(xb)[0]
            sb = s_mod(xb)[0]
            loss = _loss(sb, tb, temperature)
            if y_train is not None and sb.dim() == 2:
                loss = (1 - label_weight) * loss + label_weight * F.cross_entropy(sb, y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            _bar(progress, f"epoch {ep + 1}/{epochs} loss {total / (step + 1):.4f}", (step + 1) / steps_per_epoch)
        h_loss, h_agree = held_out()
        mark = ""
        if h_loss < best[0]:
            best = (h_loss, [p.detach().clone() for p in s_mod.weights])
            mark = " *"
        text = f"epoch {ep + 1}/{epochs} loss {total / steps_per_epoch:.4f} held-out {h_loss:.4f} agree {100 * h_agree:.1f}%{mark}"
        _bar(progress, text, 1.0, end=True)
    with torch.no_grad():
        for p, w in zip(s_mod.weights, best[1], strict=True):
            p.copy_(w)
    log(f"held-out best: loss {best[0]:.4f} (kept those weights)")
    return s_mod.write_back(student)
