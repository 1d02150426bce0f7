"""The README's picture of what the appearance stage adds: the shipped sample clip segmented with flow
propagation alone and with the appearance stage, side by side on frames where the flow loses the object.

    python benchmarks/appearance_figure.py --frames 30 60 90 --out docs/appearance_sample.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

import rtvos
from rtvos.data.sample import sample_clip_paths
from rtvos.io import read_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[30, 60, 90])
    ap.add_argument("--out", default="docs/appearance_sample.jpg")
    ap.add_argument("--width", type=int, default=320, help="width of each panel")
    args = ap.parse_args()
    video, mask_path = sample_clip_paths()
    mask, _ = read_mask(mask_path)
    want = set(args.frames)
    panels: dict[str, dict[int, np.ndarray]] = {"none": {}, "grid": {}}
    for mode in panels:
        for r in rtvos.track(str(video), mask=mask, appearance=mode, max_frames=max(want) + 1):
            if r.frame_index in want:
                panels[mode][r.frame_index] = r.plot()
    rows = []
    for mode, title in (("none", "flow alone"), ("grid", "flow + appearance (default)")):
        tiles = []
        for f in args.frames:
            img = panels[mode][f]
            h = int(round(img.shape[0] * args.width / img.shape[1]))
            tile = cv2.resize(img, (args.width, h), interpolation=cv2.INTER_AREA)
            bar = np.full((22, args.width, 3), 255, np.uint8)
            cv2.putText(bar, f"{title}, frame {f}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.vstack([bar, tile]))
        rows.append(np.hstack(tiles))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
