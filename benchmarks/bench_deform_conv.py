"""CPU timing of rtvos.ops.deform_conv2d against torchvision.ops.deform_conv2d.

Shapes are RPM-Net's matching head (D1: 64->32, D2: 32->16, D3: 16->2 channels, 3x3, pad 1)
at 128x128, with random offsets of a few pixels. Reports the median of ``--runs`` timed
calls after ``--warmup`` untimed ones, forward only under ``torch.no_grad()`` (inference is
what the real-time path runs) and optionally forward+backward.

    python benchmarks/bench_deform_conv.py [--runs 20] [--size 128] [--backward] [--threads N]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rtvos.ops import deform_conv2d  # noqa: E402

try:
    from torchvision.ops import deform_conv2d as tv_deform_conv2d
except Exception as exc:  # pragma: no cover - environment dependent
    tv_deform_conv2d = None
    print(f"torchvision unavailable ({exc}); timing rtvos only")

LAYERS = {"D1": (64, 32), "D2": (32, 16), "D3": (16, 2)}


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def make_call(
    impl: Callable[..., Tensor], tensors: dict[str, Optional[Tensor]], backward: bool
) -> Callable[[], object]:
    if not backward:
        def run() -> object:
            with torch.no_grad():
                return impl(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"],
                            padding=1, mask=tensors["mask"])
        return run

    def run_bwd() -> object:
        leaves = [t for t in tensors.values() if t is not None]
        out = impl(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"],
                   padding=1, mask=tensors["mask"])
        return torch.autograd.grad(out.sum(), leaves)

    return run_bwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input height = width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mask", action="store_true", help="also pass a DCNv2 modulation mask")
    parser.add_argument("--backward", action="store_true", help="time forward+backward too")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"input {args.batch}xCx{args.size}x{args.size}, 3x3 pad 1, mask={args.mask}, "
          f"median of {args.runs} after {args.warmup} warm-up")
    modes = [False, True] if args.backward else [False]
    header = f"{'layer':<6}{'shape':<16}{'pass':<10}{'torchvision ms':>16}{'rtvos ms':>12}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    for name, (cin, cout) in LAYERS.items():
        n, s = args.batch, args.size
        tensors: dict[str, Optional[Tensor]] = {
            "input": torch.randn(n, cin, s, s, generator=gen),
            "offset": torch.randn(n, 18, s, s, generator=gen) * 2.0,
            "weight": torch.randn(cout, cin, 3, 3, generator=gen) * 0.05,
            "bias": torch.randn(cout, generator=gen),
            "mask": torch.rand(n, 9, s, s, generator=gen) if args.mask else None,
        }
        if tv_deform_conv2d is not None:
            ref = tv_deform_conv2d(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"],
                                   padding=1, mask=tensors["mask"])
            got = deform_conv2d(tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"],
                                padding=1, mask=tensors["mask"])
            err = (got - ref).abs().max().item()
            if err > 1e-3:
                raise SystemExit(f"{name}: rtvos and torchvision disagree (max abs diff {err:.3g})")
        for backward in modes:
            if backward:
                for t in tensors.values():
                    if t is not None:
                        t.requires_grad_(True)
            ours = median_ms(make_call(deform_conv2d, tensors, backward), args.runs, args.warmup)
            theirs = (median_ms(make_call(tv_deform_conv2d, tensors, backward), args.runs, args.warmup)
                      if tv_deform_conv2d is not None else float("nan"))
            shape = f"{cin}->{cout}"
            label = "fwd+bwd" if backward else "fwd"
            print(f"{name:<6}{shape:<16}{label:<10}{theirs:>16.2f}{ours:>12.2f}{theirs / ours:>9.2f}x")


if __name__ == "__main__":
    main()
