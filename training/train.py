"""Self-supervised RPM-Net training (paper recipe): predict frame t by warping frame t − gap; MSE at S/4.

Why the pieces:
- The poly schedule is computed from the iteration, not stored in a scheduler, so resume is exact.
- Weights go to an rtvos checkpoint (`ckpt_XXXXXXX.pt`, loadable by `rtvos.load_model`); the optimiser,
  iteration, RNG states and data position go to a sidecar (`ckpt_XXXXXXX.state.pt`) that loads with
  `torch.load(weights_only=True)` (plain containers and tensors only).
- DDP comes from the standard torchrun environment (RANK/WORLD_SIZE/MASTER_*); only rank 0 logs and saves.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .data import PairDataset, PairSampler, find_clips
from .teacher import TEACHERS, DISTeacher, rgb_to_lab, robust_l1, squared_error

__all__ = ["TrainConfig", "TrainResult", "FlowNet", "train", "train_step", "warp_loss", "compute_loss",
           "make_optimizer", "poly_lr", "latest_checkpoint", "validate", "recipe_name"]

_CKPT_RE = re.compile(r"^ckpt_(\d{7})\.pt$")


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    model: str = "rpmnet_r18"
    matching: str = "deformable"
    size: int = 256
    batch: int = 8
    iters: int = 1000
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    gap: int = 5
    gap_range: tuple[int, int] | None = None
    workers: int = 2
    ckpt_every: int = 500
    log_every: int = 1
    resume: bool = False
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "cpu"
    cache_mb: int = 1024
    quiet: bool = False
    stop_at: int | None = None  # end this run after this step, keeping the --iters schedule (time-boxed jobs)
    # Beyond the paper (all label-free): classical-flow teacher and the reconstruction colour space.
    teacher: str = "none"  # "none" | "dis"
    teacher_weight: float = 0.1
    teacher_preset: str = "medium"
    teacher_fb: bool = True  # mask the teacher where DIS fails its forward-backward check
    teacher_loss: str = "l1"  # "l1" (robust, median-seeking) | "l2" (squared error: large motions weigh more)
    color: str = "rgb"  # "rgb" (paper) | "lab"
    optim: str = "sgd"  # "sgd" (paper) | "adamw" (faster start on tiny compute)
    # Periodic validation on an annotated dev set (scores only; never trained on).
    val_root: str | None = None
    val_set: str = "dev"
    val_dataset: str = "davis2017"
    val_every: int = 0  # 0: only at the end of the run (when val_root is given)
    val_size: int | None = None  # Segmenter input size; None: the training size
    val_max_frames: int | None = None  # first K frames of each sequence (faster, noisier)


@dataclass
class TrainResult:
    losses: list[tuple[int, float]]  # (step, loss) logged on rank 0 this run
    checkpoint: Path | None  # last checkpoint written (rank 0)
    it_per_s: float
    data_share: float  # fraction of step wall time spent waiting on the data loader
    start_step: int
    val: list[dict[str, float]] = field(default_factory=list)  # validations of this run (rank 0)


def poly_lr(base: float, it: int, max_it: int, power: float = 0.9) -> float:
    """lr·(1 − it/max_it)^power, the paper's schedule."""
    return base * max(0.0, 1.0 - it / max_it) ** power


def latest_checkpoint(out: Path) -> Path | None:
    """Newest `ckpt_*.pt` that has its training-state sidecar (a complete save)."""
    found = sorted((int(m.group(1)), p) for p in out.glob("ckpt_*.pt") if (m := _CKPT_RE.match(p.name)))
    found = [(s, p) for s, p in found if _state_path(p).is_file()]
    return found[-1][1] if found else None


def _state_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.stem + ".state.pt")


class FlowNet(torch.nn.Module):
    """RPM-Net's f4 as a module's forward: DDP only syncs gradients of what goes through forward()."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ref: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
        e_ref, e_tar = self.model.embed(torch.cat((ref, tar), dim=0)).chunk(2, dim=0)
        return self.model.match(e_ref, e_tar)


def _flow_net(net: torch.nn.Module) -> torch.nn.Module:
    from rtvos.models import RPMNet

    return FlowNet(net) if isinstance(net, RPMNet) else net


def compute_loss(
    net: torch.nn.Module, ref: torch.Tensor, tar: torch.Tensor, teacher: torch.Tensor | None = None,
    weight: torch.Tensor | None = None, teacher_weight: float = 0.0, color: str = "rgb", teacher_loss: str = "l1",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction MSE at S/4 (paper) [+ teacher_weight · robust L1(f4, teacher flow)]; returns (loss, parts)."""
    from rtvos.models import RPMNet

    with torch.autocast(ref.device.type, enabled=ref.device.type == "cuda"):
        flow = _flow_net(net)(ref, tar)
    flow = flow.float()
    ref_c, tar_c = (rgb_to_lab(ref), rgb_to_lab(tar)) if color == "lab" else (ref, tar)
    pred = RPMNet.warp(RPMNet.downsample(ref_c.float()), flow)
    recon = F.mse_loss(pred, RPMNet.downsample(tar_c.float()))
    parts = {"recon": float(recon.detach())}
    loss = recon
    if teacher is not None and teacher_weight > 0:
        w = weight if weight is not None else torch.ones_like(teacher[:, :1])
        distill = (robust_l1 if teacher_loss == "l1" else squared_error)(flow, teacher.to(flow.device), w.to(flow.device))
        parts["teacher"] = float(distill.detach())
        loss = loss + teacher_weight * distill
    return loss, parts


def warp_loss(net: torch.nn.Module, ref: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
    """The paper's loss: MSE between the reference warped onto the target (at S/4) and the downsampled target."""
    return compute_loss(net, ref, tar)[0]


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, ref: torch.Tensor, tar: torch.Tensor, lr: float,
               scaler: torch.amp.GradScaler | None = None, teacher: torch.Tensor | None = None,
               weight: torch.Tensor | None = None, teacher_weight: float = 0.0, color: str = "rgb",
               parts: dict[str, float] | None = None, teacher_loss: str = "l1") -> torch.Tensor:
    """One SGD step at learning rate `lr` on float [0, 1] N×3×S×S pairs; returns the (pre-step) loss.

    `net` is an RPMNet or a (DDP-wrapped) FlowNet; `parts` (if given) receives the loss terms.
    """
    for g in opt.param_groups:
        g["lr"] = lr
    loss, terms = compute_loss(net, ref, tar, teacher, weight, teacher_weight, color, teacher_loss)
    if parts is not None:
        parts.update(terms)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss.detach()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's optimiser: SGD, momentum 0.9, weight decay 5e-4 (defaults of TrainConfig); or AdamW."""
    if cfg.optim == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _validate(cfg: TrainConfig) -> None:
    from rtvos.models import SIZE_MULTIPLE

    if cfg.size <= 0 or cfg.size % SIZE_MULTIPLE:
        raise ValueError(f"--size must be a positive multiple of {SIZE_MULTIPLE}, got {cfg.size}")
    for name in ("batch", "iters", "ckpt_every", "log_every"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(cfg, name)}")
    if cfg.stop_at is not None and cfg.stop_at <= 0:
        raise ValueError(f"--stop-at must be > 0, got {cfg.stop_at}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
    if not cfg.lr > 0:
        raise ValueError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.teacher not in TEACHERS:
        raise ValueError(f"--teacher must be one of {', '.join(TEACHERS)}, got {cfg.teacher!r}")
    if cfg.teacher != "none" and not cfg.teacher_weight > 0:
        raise ValueError(f"--teacher-weight must be > 0 with --teacher {cfg.teacher}, got {cfg.teacher_weight}")
    if cfg.teacher_loss not in ("l1", "l2"):
        raise ValueError(f"--teacher-loss must be l1 or l2, got {cfg.teacher_loss!r}")
    if cfg.optim not in ("sgd", "adamw"):
        raise ValueError(f"--optim must be sgd or adamw, got {cfg.optim!r}")
    if cfg.color not in ("rgb", "lab"):
        raise ValueError(f"--color must be rgb or lab, got {cfg.color!r}")
    if cfg.val_every < 0:
        raise ValueError(f"--val-every must be >= 0, got {cfg.val_every}")
    if cfg.val_size is not None and (cfg.val_size <= 0 or cfg.val_size % SIZE_MULTIPLE):
        raise ValueError(f"--val-size must be a positive multiple of {SIZE_MULTIPLE}, got {cfg.val_size}")
    if cfg.val_max_frames is not None and cfg.val_max_frames < 3:
        raise ValueError(f"--val-max-frames must be >= 3 (the first and last frames are not scored), "
                         f"got {cfg.val_max_frames}")


def recipe_name(cfg: TrainConfig) -> str:
    """One line for checkpoint meta and reports."""
    gap = f"gap {cfg.gap_range[0]}-{cfg.gap_range[1]}" if cfg.gap_range else f"gap {cfg.gap}"
    parts = [f"self-supervised warp MSE ({cfg.color})"]
    if cfg.teacher != "none":
        kind = "robust-L1" if cfg.teacher_loss == "l1" else "squared error"
        parts.append(f"{cfg.teacher_weight:g} x {kind} to DIS-{cfg.teacher_preset} flow teacher"
                     + (" (fwd-bwd masked)" if cfg.teacher_fb else ""))
    opt = "AdamW" if cfg.optim == "adamw" else "SGD"
    return (" + ".join(parts) + f"; {opt} lr {cfg.lr:g} poly {cfg.power:g} over {cfg.iters} it, batch {cfg.batch}, "
            f"S={cfg.size}, {gap}")


def _val_sequences(cfg: TrainConfig) -> list[Any]:
    from rtvos.eval import load_dataset

    assert cfg.val_root is not None
    seqs = load_dataset(cfg.val_root, cfg.val_dataset, cfg.val_set)
    if cfg.val_max_frames:
        k = cfg.val_max_frames
        seqs = [replace(s, frame_paths=s.frame_paths[:k], gt_paths=s.gt_paths[:k],
                        gt_object_paths=s.gt_object_paths[:k] if s.gt_object_paths else None) for s in seqs]
    return seqs


def validate(model: torch.nn.Module, sequences: list[Any], size: int, device: str | torch.device = "cpu"
             ) -> dict[str, float]:
    """Dev J&F of the current weights through the `rtvos eval` machinery (Segmenter defaults but `size`).

    Leaves the model in eval mode; the caller puts it back in train mode.
    """
    from rtvos.eval.runner import build_method, run_method, score_results

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtvos_val_") as tmp:
        stepper = build_method("rpmnet", model, size=size, device=str(device), backend="eager", appearance="none")
        run = run_method(stepper, sequences, tmp, "rpmnet", "none", progress=False)[0]
        g = score_results(sequences, run.results_dir).global_table()
    return {"jf": float(g["J&F-Mean"]), "j": float(g["J-Mean"]), "f": float(g["F-Mean"]),
            "frames": float(run.frames), "seconds": time.perf_counter() - t0}


def _dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray: stored as a tensor so weights_only loading accepts it.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Logs:
    """CSV always; TensorBoard only when the `tensorboard` package imports (rank 0 only)."""

    FIELDS = ("step", "loss", "lr", "it_per_s", "data_share", "recon", "teacher")
    VAL_FIELDS = ("step", "jf", "j", "f", "frames", "seconds")

    def __init__(self, out: Path, append: bool, quiet: bool) -> None:
        path = out / "train_log.csv"
        fresh = not (append and path.is_file())
        self.file = open(path, "w" if fresh else "a", newline="")
        self.csv = csv.writer(self.file)
        if fresh:
            self.csv.writerow(self.FIELDS)
        self.val_path = out / "val_log.csv"
        self.val_fresh = not (append and self.val_path.is_file())
        self.tb: Any = None
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            if not quiet:
                print("rtvos train: tensorboard not installed; logging to CSV only", file=sys.stderr)

    def write(self, step: int, loss: float, lr: float, its: float, share: float,
              parts: dict[str, float] | None = None) -> None:
        parts = parts or {}
        self.csv.writerow((step, f"{loss:.8g}", f"{lr:.8g}", f"{its:.4g}", f"{share:.4f}",
                           *(f"{parts[k]:.8g}" if k in parts else "" for k in ("recon", "teacher"))))
        self.file.flush()
        if self.tb is not None:
            for k, v in (("loss", loss), ("lr", lr), ("it_per_s", its), ("data_share", share), *parts.items()):
                self.tb.add_scalar(f"train/{k}", v, step)

    def write_val(self, step: int, res: dict[str, float]) -> None:
        with open(self.val_path, "w" if self.val_fresh else "a", newline="") as f:
            w = csv.writer(f)
            if self.val_fresh:
                w.writerow(self.VAL_FIELDS)
            w.writerow((step, *(f"{res[k]:.6g}" for k in self.VAL_FIELDS[1:])))
        self.val_fresh = False
        if self.tb is not None:
            for k in ("jf", "j", "f"):
                self.tb.add_scalar(f"val/{k}", res[k], step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _save(out: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler | None, cfg: TrainConfig, consumed: int, world: int) -> Path:
    from rtvos.models import save_checkpoint

    path = out / f"ckpt_{step:07d}.pt"
    meta = {"trained": True, "size": cfg.size, "model": cfg.model, "iterations": step, "recipe": recipe_name(cfg),
            "data": [str(d) for d in cfg.data]}
    state = {
        "step": step,
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
        "consumed_per_rank": consumed,
        "world_size": world,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    # Sidecar first, weights last: `latest_checkpoint` only trusts a weights file whose sidecar exists,
    # and the weights are written atomically by save_checkpoint.
    sidecar = _state_path(path)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, sidecar)
    save_checkpoint(model, path, meta=meta)
    return path


def _save_best(out: Path, step: int, model: torch.nn.Module, cfg: TrainConfig, res: dict[str, float]) -> None:
    """`best.pt` (weights, loadable by rtvos.load_model) + `best.json` (step and dev scores)."""
    from rtvos.models import save_checkpoint

    meta = {"trained": True, "size": cfg.size, "model": cfg.model, "iterations": step, "recipe": recipe_name(cfg),
            "data": [str(d) for d in cfg.data],
            "val": {"root": cfg.val_root, "set": cfg.val_set, "size": cfg.val_size or cfg.size,
                    "max_frames": cfg.val_max_frames, "jf": res["jf"], "j": res["j"], "f": res["f"]}}
    save_checkpoint(model, out / "best.pt", meta=meta)
    tmp = out / "best.json.tmp"
    tmp.write_text(json.dumps({"step": step, **{k: res[k] for k in ("jf", "j", "f", "frames")},
                               "val_set": cfg.val_set, "val_size": cfg.val_size or cfg.size,
                               "val_max_frames": cfg.val_max_frames}, indent=2))
    os.replace(tmp, out / "best.json")


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training; returns the logged losses and throughput of this run."""
    _validate(cfg)
    rank, local_rank, world = _dist_env()
    distributed = world > 1
    device = torch.device(cfg.device)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, rank, world, device)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> TrainResult:
    from tqdm import tqdm

    import rtvos
    from rtvos.models import load_checkpoint

    out = Path(cfg.out)
    clips = find_clips(cfg.data, cfg.exclude)  # validate data before touching the output folder
    teacher = DISTeacher(cfg.teacher_preset, fb_check=cfg.teacher_fb) if cfg.teacher == "dis" else None
    dataset = PairDataset(clips, size=cfg.size, gap=cfg.gap, gap_range=cfg.gap_range, seed=cfg.seed,
                          cache_mb=cfg.cache_mb, teacher=teacher)
    val_seqs = _val_sequences(cfg) if cfg.val_root and rank == 0 else None  # fail fast on a bad --val-root
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None:
        raise ValueError(f"--resume: no complete checkpoint (ckpt_*.pt + .state.pt) in {out}")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = rtvos.create_model(cfg.model, matching=cfg.matching)  # the model's own Gaussian init
    step, consumed = 0, 0
    state: dict[str, Any] | None = None
    if resume_from is not None:
        load_checkpoint(resume_from, model)
        state = torch.load(_state_path(resume_from), map_location="cpu", weights_only=True)
        step = int(state["step"])
        if int(state["world_size"]) != world:
            raise ValueError(f"{resume_from} was saved with {state['world_size']} process(es), not {world}: "
                             "exact resume needs the same world size")
        saved = state["config"]
        defaults = TrainConfig(data=[], out="")
        for key in ("size", "batch", "seed", "gap", "gap_range", "teacher", "teacher_weight", "teacher_loss", "color", "optim"):
            now = list(v) if isinstance(v := getattr(cfg, key), tuple) else v
            if saved.get(key, getattr(defaults, key)) != now:
                raise ValueError(f"--{key.replace('_', '-')} {now} differs from {saved.get(key)} in {resume_from}")
        consumed = int(state["consumed_per_rank"])
        if step >= cfg.iters:
            raise ValueError(f"{resume_from} is already at step {step} >= --iters {cfg.iters}")
        if cfg.stop_at is not None and cfg.stop_at <= step:
            raise ValueError(f"--stop-at {cfg.stop_at} is not after step {step} of {resume_from}")
    model.to(device).train()
    net: torch.nn.Module = FlowNet(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(model, cfg)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])

    sampler = PairSampler(len(dataset), seed=cfg.seed, rank=rank, world_size=world, consumed=consumed)
    loader = DataLoader(dataset, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if cfg.workers else None)
    main = rank == 0
    logs = _Logs(out, append=resume_from is not None, quiet=cfg.quiet) if main else None
    if main and not cfg.quiet:
        print(f"rtvos train: {len(clips)} clip(s), {len(dataset)} pairs, {cfg.model} S={cfg.size} "
              f"batch {cfg.batch}x{world}, steps {step}->{cfg.iters}"
              + (f", resumed from {resume_from}" if resume_from else ""), file=sys.stderr)
    bar = tqdm(total=cfg.iters, initial=step, unit="it", disable=True if (cfg.quiet or not main) else None,
               file=sys.stderr, dynamic_ncols=True)
    losses: list[tuple[int, float]] = []
    last_ckpt: Path | None = None
    win_data = win_total = 0.0
    win_steps = 0
    run_data = run_total = 0.0
    run_steps = 0
    start_step = step
    val_results: list[dict[str, float]] = []
    best_path = out / "best.json"
    best = json.loads(best_path.read_text()).get("jf", -1.0) if (main and resume_from and best_path.is_file()) else -1.0
    it = iter(loader)
    try:
        end = min(cfg.iters, cfg.stop_at) if cfg.stop_at is not None else cfg.iters
        while step < end:
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            ref = batch[0].to(device, non_blocking=True).float().div_(255)
            tar = batch[1].to(device, non_blocking=True).float().div_(255)
            t_flow, t_w = (batch[2].to(device), batch[3].to(device)) if len(batch) == 4 else (None, None)
            lr = poly_lr(cfg.lr, step, cfg.iters, cfg.power)
            parts: dict[str, float] = {}
            loss = train_step(net, opt, ref, tar, lr, scaler, t_flow, t_w, cfg.teacher_weight, cfg.color, parts,
                              cfg.teacher_loss)
            step += 1
            consumed += cfg.batch
            value = loss.detach()
            if world > 1:
                dist.all_reduce(value)
                value /= world
            loss_f = float(value)
            if not np.isfinite(loss_f):
                raise RuntimeError(f"loss became {loss_f} at step {step} (lr {lr:.3g}); lower --lr")
            t2 = time.perf_counter()
            win_data += t1 - t0
            win_total += t2 - t0
            win_steps += 1
            if step > start_step + 1:  # the first step includes worker start-up and first decodes
                run_data += t1 - t0
                run_total += t2 - t0
                run_steps += 1
            if main:
                losses.append((step, loss_f))
                bar.update(1)
                bar.set_postfix(loss=f"{loss_f:.4g}", lr=f"{lr:.2e}", data=f"{win_data / win_total:.0%}")
                if step % cfg.log_every == 0 or step == end:
                    assert logs is not None
                    logs.write(step, loss_f, lr, win_steps / win_total, win_data / win_total, parts)
                    win_data = win_total = 0.0
                    win_steps = 0
                if step % cfg.ckpt_every == 0 or step == end:
                    last_ckpt = _save(out, step, model, opt, scaler, cfg, consumed, world)
            validating = cfg.val_root is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == end)
            if main and validating:
                assert val_seqs is not None and logs is not None
                res = validate(model, val_seqs, cfg.val_size or cfg.size, device)
                model.train()
                res["step"] = step
                val_results.append(res)
                logs.write_val(step, res)
                if res["jf"] > best:
                    best = res["jf"]
                    _save_best(out, step, model, cfg, res)
                if not cfg.quiet:
                    bar.write(f"rtvos train: step {step} dev J&F {res['jf']:.4f} (J {res['j']:.4f}, F {res['f']:.4f}; "
                              f"{res['frames']:.0f} frames in {res['seconds']:.0f} s); best {best:.4f}", file=sys.stderr)
            if world > 1 and (step % cfg.ckpt_every == 0 or step == end or validating):
                dist.barrier()  # no rank races ahead of a save it may later resume from (or of a validation)
    finally:
        bar.close()
        if logs is not None:
            logs.close()
        del it
    its = run_steps / run_total if run_total else (win_steps / win_total if win_total else 0.0)
    share = run_data / run_total if run_total else 0.0
    if main and not cfg.quiet:
        print(f"rtvos train: {step - start_step} step(s) at {its:.3g} it/s, data loading {share:.1%} of step "
              f"time; last checkpoint {last_ckpt}", file=sys.stderr)
    return TrainResult(losses=losses, checkpoint=last_ckpt, it_per_s=its, data_share=share, start_step=start_step,
                       val=val_results)
