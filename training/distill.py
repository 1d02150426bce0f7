"""Train an ``rpmnet_dis`` model: deformable matching that refines a fast DIS prior toward a slow DIS teacher.

Why this recipe (docs/training.md has the measurements):
- On 2 CPU cores a network cannot out-run classical flow, so it starts from one: the model gets the
  ``ultrafast-fine`` DIS field as a prior and predicts a residual (``RPMNetConfig.prior``).
- The target is ``medium-fine`` DIS (finest scale 0), which propagates masks better than any preset we can
  afford live but costs ~100 ms per frame: it is precomputed once per clip (`rtvos.training.flow_cache`), so a
  training step reads arrays and never runs DIS. No label is read anywhere.
- The loss is on the field the Segmenter really uses: prior (at the stored scale) + the residual upsampled,
  against the teacher where it passes its forward–backward check (Charbonnier); where the teacher is not
  trusted, a small L1 pull on the residual keeps the prior.
- Crops are cut at the scale inference sees: the stored short side is 2× the network's, so a 2× downscale
  of a crop is exactly what the Segmenter feeds the network for a 480p frame at ``--size`` 128.

    python -m rtvos.training.distill ~/rtvos-runs/teacher --out ~/rtvos-runs/dis1 --iters 6000 [--resume]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from rtvos.flow import field_to_grid
from rtvos.models import create_model, load_network, resize_flow, save_checkpoint
from rtvos.models.rpmnet import RPMNet

from .flow_cache import load_clip

__all__ = ["DistillConfig", "CachePairs", "distill_loss", "field_to_model", "train"]


@dataclass
class DistillConfig:
    cache: str
    out: str
    model: str = "rpmnet_dis_r18_w50"
    init: str | None = None  # warm start: a checkpoint path (e.g. the shipped default)
    size: int = 128  # network short side; the cache's stored short side must be 2× this
    crop: int = 256  # square crop at the stored scale
    batch: int = 8
    iters: int = 6000
    lr: float = 5e-4
    weight_decay: float = 1e-4
    res_reg: float = 0.01
    # Where prior and teacher disagree by more than this (stored px), a pixel weighs `hard_weight` times more:
    # most pixels already agree, and an unweighted robust loss learns the trivial zero residual.
    hard_px: float = 0.5
    hard_weight: float = 10.0
    workers: int = 1
    seed: int = 0
    ckpt_every: int = 250
    log_every: int = 25
    resume: bool = False


def field_to_model(field: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×2×H×W (dx, dy) in its own pixels → N×2×h×w (dy, dx) in the pixels of grid `size`: the Segmenter's
    own conversion (`rtvos.flow.field_to_grid`), so training feeds the prior exactly as inference does."""
    arrays = [field_to_grid(np.ascontiguousarray(f.permute(1, 2, 0).numpy()), size) for f in field.detach().cpu()]
    return torch.from_numpy(np.stack(arrays)).to(field)


class CachePairs(Dataset):
    """Random square crops (and flips) of the cached pairs; every random choice is seeded by (seed, index)."""

    def __init__(self, root: Path, crop: int, seed: int = 0) -> None:
        self.entries = sorted(p for p in Path(root).iterdir() if (p / "meta.json").exists())
        if not self.entries:
            raise ValueError(f"no flow-cache entries under {root} (run python -m rtvos.training.flow_cache first)")
        self.crop, self.seed = crop, seed
        self.index: list[tuple[int, int]] = []
        for i, e in enumerate(self.entries):
            meta = json.loads((e / "meta.json").read_text())
            if min(meta["stored_size"]) >= crop:
                self.index += [(i, j) for j in range(meta["num_pairs"])]
        if not self.index:
            raise ValueError(f"no cached clip under {root} is at least {crop} px on its short side")
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, j = self.index[k % len(self.index)]
        a = self._arrays.get(i)
        if a is None:
            a = self._arrays[i] = load_clip(self.entries[i])
        rng = np.random.default_rng((self.seed, k))
        h, w = a["frames"].shape[2:4]
        y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        sl = (j, slice(y, y + self.crop), slice(x, x + self.crop))
        frames = np.asarray(a["frames"][j, :, sl[1], sl[2]], np.float32) / 255.0  # 2×c×c×3
        prior = np.asarray(a["prior"][sl], np.float32)
        teacher = np.asarray(a["teacher"][sl], np.float32)
        valid = np.asarray(a["valid"][sl], np.float32)
        if rng.random() < 0.5:  # horizontal flip: mirror everything, negate dx
            frames, prior, teacher, valid = frames[:, :, ::-1], prior[:, ::-1], teacher[:, ::-1], valid[:, ::-1]
            prior = prior * np.array([-1, 1], np.float32)
            teacher = teacher * np.array([-1, 1], np.float32)
        t = lambda v: torch.from_numpy(np.ascontiguousarray(v))  # noqa: E731
        return {
            "ref": t(frames[0]).permute(2, 0, 1), "tar": t(frames[1]).permute(2, 0, 1),
            "prior": t(prior).permute(2, 0, 1), "teacher": t(teacher).permute(2, 0, 1), "valid": t(valid)[None],
        }


def _small(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(img, size=hw, mode="area")


def distill_loss(
    model: RPMNet, batch: dict[str, torch.Tensor], size: int | tuple[int, int], res_reg: float,
    hard_px: float = 0.5, hard_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Charbonnier distance of prior + residual (at the stored scale) to the teacher where it is trusted.

    ``size``: the network input of the crop (an int for square crops, else (h, w))."""
    ref, tar = _small(batch["ref"], size), _small(batch["tar"], size)
    e = model.embed(torch.cat((ref, tar)))
    e_ref, e_tar = e.chunk(2)
    grid = tuple(e.shape[-2:])
    prior_s4 = field_to_model(batch["prior"], grid)  # type: ignore[arg-type]
    hw = tuple(batch["prior"].shape[-2:])
    residual = resize_flow(model.match(e_ref, e_tar, prior_s4), hw)  # type: ignore[arg-type]
    full = batch["prior"].flip(1) + residual  # (dy, dx) at the stored scale
    target = batch["teacher"].flip(1)
    valid = batch["valid"]
    d = torch.sqrt((full - target) ** 2 + 1e-4).sum(1, keepdim=True)
    gap = (batch["teacher"] - batch["prior"]).norm(dim=1, keepdim=True)
    wgt = valid * (1.0 + (hard_weight - 1.0) * (gap > hard_px).float())
    teach = (d * wgt).sum() / wgt.sum().clamp_min(1.0)
    reg = (residual.abs().sum(1, keepdim=True) * (1 - valid)).mean()
    loss = teach + res_reg * reg
    with torch.no_grad():
        epe_prior = ((batch["prior"] - batch["teacher"]).norm(dim=1, keepdim=True) * valid).sum() / valid.sum().clamp_min(1.0)
        epe = ((full - target).norm(dim=1, keepdim=True) * valid).sum() / valid.sum().clamp_min(1.0)
    return loss, {"loss": float(loss.detach()), "epe": float(epe), "epe_prior": float(epe_prior), "reg": float(reg.detach())}


def _latest(out: Path) -> Path | None:
    c = sorted(out.glob("state_*.pt"))
    return c[-1] if c else None


def train(cfg: DistillConfig) -> Path:
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model)
    if cfg.init:
        src = load_network(cfg.init)
        got = model.load_state_dict(src.state_dict(), strict=False)
        print(f"warm start from {cfg.init}: missing {len(got.missing_keys)}, unexpected {len(got.unexpected_keys)}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    state_path = _latest(out) if cfg.resume else None
    if state_path is not None:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = int(st["step"])
        print(f"resumed from {state_path} at step {start}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    data = CachePairs(Path(cfg.cache).expanduser(), cfg.crop, cfg.seed)
    order = np.random.default_rng(cfg.seed).permutation(max(cfg.iters * cfg.batch, 1)) % len(data)

    class _Items(Dataset):
        def __len__(self) -> int:
            return len(order) - start * cfg.batch

        def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
            return data[int(order[start * cfg.batch + k])]

    loader = DataLoader(_Items(), batch_size=cfg.batch, num_workers=cfg.workers, drop_last=True,
                        persistent_workers=cfg.workers > 0)
    log = open(out / "log.csv", "a", newline="")
    writer = csv.writer(log)
    if start == 0:
        writer.writerow(["step", "loss", "epe", "epe_prior", "reg", "lr", "it_s", "data_share"])
    model.train()
    t_last, t_data, step = time.perf_counter(), 0.0, start
    t_wait = time.perf_counter()
    for batch in loader:
        t_data += time.perf_counter() - t_wait
        lr = cfg.lr * (1 - step / cfg.iters) ** 0.9
        for g in opt.param_groups:
            g["lr"] = lr
        loss, stats = distill_loss(model, batch, cfg.size, cfg.res_reg, cfg.hard_px, cfg.hard_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.iters:
            dt = time.perf_counter() - t_last
            writer.writerow([step, f"{stats['loss']:.5f}", f"{stats['epe']:.4f}", f"{stats['epe_prior']:.4f}",
                             f"{stats['reg']:.4f}", f"{lr:.2e}", f"{cfg.log_every / dt:.3f}", f"{t_data / dt:.3f}"])
            log.flush()
            print(f"step {step} loss {stats['loss']:.4f} epe {stats['epe']:.3f} (prior {stats['epe_prior']:.3f}) "
                  f"{cfg.log_every / dt:.2f} it/s data {t_data / dt:.1%}", flush=True)
            t_last, t_data = time.perf_counter(), 0.0
        if step % cfg.ckpt_every == 0 or step == cfg.iters:
            meta = {"trained": True, "size": cfg.size, "model": cfg.model, "iterations": step,
                    "recipe": f"dis-distill (teacher cache {Path(cfg.cache).name}, hard weight {cfg.hard_weight})",
                    "data": f"{len(data.entries)} cached clips, {len(data)} pairs, no labels",
                    "source": f"rtvos.training.distill {out.name} step {step}"}
            save_checkpoint(model, out / f"ckpt_{step:07d}.pt", meta=meta, half=False)
            tmp = out / f".state_{step:07d}.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
            tmp.replace(out / f"state_{step:07d}.pt")
            for old in sorted(out.glob("state_*.pt"))[:-2]:
                old.unlink()
        if step >= cfg.iters:
            break
        t_wait = time.perf_counter()
    log.close()
    return out / f"ckpt_{step:07d}.pt"


def plot_runs(runs: list[Path], out: Path, smooth: int = 10) -> Path:
    """Training curves of distill runs: loss, and the student's EPE minus its prior's (below 0 = it helps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
    for run in runs:
        with open(run / "log.csv") as f:
            rows = list(csv.DictReader(f))
        step = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        gain = np.array([float(r["epe"]) - float(r["epe_prior"]) for r in rows])
        k = max(1, min(smooth, len(rows)))
        sm = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")  # noqa: E731
        axes[0].plot(step[k - 1 :], sm(loss), label=run.name)
        axes[1].plot(step[k - 1 :], sm(gain), label=run.name)
    axes[0].set(xlabel="step", ylabel="training loss (smoothed)", title="loss")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set(xlabel="step", ylabel="EPE(student) − EPE(prior), px", title="what the residual adds (< 0 helps)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "plot":  # python -m rtvos.training.distill plot RUN [RUN ...] --out PNG
        pp = argparse.ArgumentParser(prog="python -m rtvos.training.distill plot")
        pp.add_argument("runs", nargs="+", type=Path)
        pp.add_argument("--out", type=Path, required=True)
        a = pp.parse_args(argv[1:])
        print(plot_runs(a.runs, a.out))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache")
    d = DistillConfig("", "")
    ap.add_argument("--out", required=True)
    for k in ("model", "init", "size", "crop", "batch", "iters", "lr", "weight_decay", "res_reg", "hard_px",
              "hard_weight", "workers", "seed", "ckpt_every", "log_every"):
        v = getattr(d, k)
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v) if v is not None else str, default=v)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    cfg = DistillConfig(**{k: v for k, v in vars(a).items()})
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
