"""Export a training checkpoint as a shippable model file: fp16 storage, provenance in the meta.

    python -m rtvos.training.export RUN/best.pt --out rtvos/assets/rpmnet_dis_r18_w50_cu.pt [--max-mb 30]

Why fp16: halves the file (R18 RPM-Net: ~25 MB instead of ~51 MB); `load_checkpoint` restores fp32.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

__all__ = ["export"]

_REQUIRED = ("size", "model", "recipe", "iterations", "data")


def export(src: Path, out: Path, max_mb: float = 30.0, extra: dict[str, Any] | None = None) -> Path:
    """Re-save `src` with half=True; refuses an untrained source, missing provenance or an oversized file."""
    from rtvos.models import load_checkpoint, save_checkpoint

    model = load_checkpoint(src)
    meta = {k: v for k, v in model.meta.items() if k != "source"}
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{src}: checkpoint meta lacks {', '.join(missing)}; re-save it from `rtvos train`")
    meta.update(extra or {})
    meta["trained"] = True
    tmp = out.with_name(out.name + ".export")
    save_checkpoint(model, tmp, meta=meta, half=True)
    mb = tmp.stat().st_size / 2**20
    if mb > max_mb:
        tmp.unlink()
        raise ValueError(f"{src}: exported file is {mb:.1f} MB > {max_mb} MB")
    tmp.replace(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RandomWeightsWarning here would mean the export is not trained
        load_checkpoint(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-mb", type=float, default=30.0)
    p.add_argument("--meta", default=None, help="JSON object merged into the meta (e.g. dev scores)")
    a = p.parse_args(argv)
    out = export(a.checkpoint, a.out, a.max_mb, json.loads(a.meta) if a.meta else None)
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
