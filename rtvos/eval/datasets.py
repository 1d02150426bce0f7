"""Benchmark readers (DAVIS-2016/2017, SegTrack-v2, YouTube-Objects) behind one `Sequence` record.

Readers only list files (and peek at one first-frame mask for the object ids); pixels are decoded on demand,
so listing a dataset is cheap and a `Sequence` pickles small for worker processes.

Layouts assumed (one folder tree per dataset root):

* DAVIS: ``JPEGImages/<res>/<seq>/%05d.jpg``, ``Annotations/<res>/<seq>/%05d.png``; sequence lists from
  ``ImageSets/<year>/<set>.txt`` (names), else ``ImageSets/<res>/<set>.txt`` (DAVIS-2016 frame-pair lines),
  else any ``ImageSets/*/<set>.txt``, else every sequence folder. DAVIS-2016 masks are binary (0/255 or
  palette 0/1: anything non-zero is object 1); DAVIS-2017 masks are palette PNGs holding ids, 255 = void.
  Optional attributes: ``db_info.yml`` (DAVIS-2016, in ``Annotations/`` or the root) and
  ``davis_semantics.json`` (root).
* SegTrack-v2 (published zip): ``JPEGImages/<seq>/*.png|bmp|jpg``; ``GroundTruth/<seq>/*.png|bmp`` for one
  object or ``GroundTruth/<seq>/<k>/*`` (k = 1, 2, ...) per object; ``ImageSets/all.txt`` lists sequences
  (a leading ``*`` marks multi-object ones) and ``ImageSets/<seq>.txt`` the frames (first line: a folder
  prefix, then one frame name per line, no extension). Masks may be RGB with soft edges: foreground is
  > 127 (or > 0 for 0/1 masks). Ground truth is matched to frames by file stem (by order if no stem matches).
* YouTube-Objects (Jain & Grauman 2014 masks): ``[youtube_masks/]<category>/data/<video>/shots/<shot>/
  labels/<n>.jpg|png`` marks frame n; frames are searched in ``v1/`` (YouTube-Objects v1 frames,
  ``frame%04d.jpg``), ``frames/``, ``JPEGImages/`` under the same relative path, then inside the shot
  folder itself; digits in the file name give the frame number. A DAVIS-like tree (``JPEGImages/<seq>``,
  ``Annotations/<seq>`` with only some frames annotated) is read too. Sequences start at the first
  annotated frame (its mask is the given one) and only annotated frames are scored.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..io.base import InputError

__all__ = [
    "DatasetError",
    "Sequence",
    "load_dataset",
    "read_davis",
    "read_label_image",
    "read_segtrack",
    "read_youtube_objects",
]

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
VOID_LABEL = 255


class DatasetError(InputError):
    """A dataset folder is missing or malformed; the message is one line, fit to show to users."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# -- pixel decoding -------------------------------------------------------------------------------------------
def _voc_palette_codes() -> np.ndarray:
    """24-bit RGB codes of the PASCAL VOC / DAVIS palette (index bits interleaved into R, G, B)."""
    idx = np.arange(256, dtype=np.int64)
    rgb = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            rgb[:, ch] |= ((idx >> (ch + 3 * shift)) & 1) << (7 - shift)
    return rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]


def _open_image(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError:
        raise DatasetError(f"missing image file: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise DatasetError(f"cannot read image (not an image or corrupt): {path}") from None


def read_label_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Ids exactly as stored (as the official tool reads them): palette/gray indices; RGB via DAVIS colours."""
    p = Path(path)
    im = _open_image(p)
    if im.mode in ("P", "L", "I", "I;16", "1"):
        arr = np.asarray(im)
        return arr.astype(np.uint8) if arr.dtype == bool else arr
    rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    codes = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    pal = _voc_palette_codes()
    order = np.argsort(pal)
    pos = np.clip(np.searchsorted(pal, codes, sorter=order), 0, 255)
    ids = order[pos]
    if not np.array_equal(pal[ids], codes):
        raise DatasetError(f"RGB mask uses colours outside the DAVIS palette: {p}")
    return ids.astype(np.uint8)


def _read_binary(path: Path) -> np.ndarray:
    """Single-object mask as 0/1: palette indices > 0 (void excluded), intensities > 127 (> 0 for 0/1 masks)."""
    im = _open_image(path)
    if im.mode == "P":
        arr = np.asarray(im)
        fg = arr > 0
        if not (fg & (arr != VOID_LABEL)).any():  # a 0/255 palette mask: 255 is the object, not void
            return fg.astype(np.uint8)
        return (fg & (arr != VOID_LABEL)).astype(np.uint8)
    arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I", "I;16", "RGB", "RGBA") else im)
    if arr.ndim == 3:  # SegTrack-v2 ships RGB masks; any bright channel is foreground
        arr = arr[..., :3].max(axis=-1)
    arr = arr.astype(np.int64)
    thr = 127 if arr.max(initial=0) > 127 else 0
    return (arr > thr).astype(np.uint8)


# -- the record ---------------------------------------------------------------------------------------------
@dataclass
class Sequence:
    """One video: frame files, per-frame ground truth (None = not annotated) and the object ids.

    ``mask_mode`` says how ground truth is decoded: "ids" (stored ids, void 255 -> 0), "binary" (one object,
    id 1) or "objects" (one binary file per object in ``gt_object_paths``, later ids win on overlap).
    ``score_last_frame`` is False for DAVIS, whose protocol does not score the last frame.
    """

    name: str
    frame_paths: list[Path]
    gt_paths: list[Path | None]
    object_ids: list[int]
    attributes: dict[str, Any] = field(default_factory=dict)
    mask_mode: str = "ids"
    gt_object_paths: list[dict[int, Path] | None] | None = None
    score_last_frame: bool = False
    resize_gt_to_frame: bool = False

    def __post_init__(self) -> None:
        if len(self.gt_paths) != len(self.frame_paths):
            raise DatasetError(f"{self.name}: {len(self.frame_paths)} frames but {len(self.gt_paths)} mask slots")
        if self.mask_mode not in ("ids", "binary", "objects"):
            raise ValueError(f"mask_mode must be 'ids', 'binary' or 'objects', got {self.mask_mode!r}")

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def annotated_indices(self) -> list[int]:
        return [i for i, p in enumerate(self.gt_paths) if p is not None]

    def load_frame(self, i: int) -> np.ndarray:
        """Frame i as H×W×3 uint8 RGB."""
        im = _open_image(self.frame_paths[i])
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.load_frame(i)

    def load_gt(self, i: int) -> np.ndarray | None:
        """Ground truth of frame i as H×W uint8 ids, or None where the frame is not annotated."""
        path = self.gt_paths[i]
        if path is None:
            return None
        if self.mask_mode == "binary":
            out = _read_binary(path)
        elif self.mask_mode == "objects":
            per_obj = (self.gt_object_paths or [None] * len(self))[i] or {}
            out = self._merge_objects(per_obj, i) if per_obj else _read_binary(path)
        else:
            arr = read_label_image(path)
            if arr.max(initial=0) > 255:
                raise DatasetError(f"mask ids above 255 are not supported: {path}")
            out = np.where(arr == VOID_LABEL, 0, arr).astype(np.uint8)
        if self.resize_gt_to_frame:
            out = self._fit_to_frame(out, i)
        return out

    def first_mask(self) -> np.ndarray:
        """Mask given to a semi-supervised method with frame 0."""
        m = self.load_gt(0)
        if m is None:
            raise DatasetError(f"{self.name}: the first frame has no annotation")
        return m

    def gt_masks(self) -> list[np.ndarray | None]:
        return [self.load_gt(i) for i in range(len(self))]

    def _merge_objects(self, per_obj: dict[int, Path], i: int) -> np.ndarray:
        out: np.ndarray | None = None
        for obj in sorted(per_obj):
            m = _read_binary(per_obj[obj])
            if out is None:
                out = np.zeros(m.shape, np.uint8)
            elif m.shape != out.shape:
                raise DatasetError(f"{self.name}: object masks of frame {i} differ in size ({per_obj[obj]})")
            out[m > 0] = obj
        assert out is not None
        return out

    def _fit_to_frame(self, mask: np.ndarray, i: int) -> np.ndarray:
        with Image.open(self.frame_paths[i]) as im:  # header only
            w, h = im.size
        if mask.shape == (h, w):
            return mask
        return np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))


# -- helpers ------------------------------------------------------------------------------------------------
def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} is not a folder")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _read_list(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _strip_image_ext(name: str) -> str:
    base = Path(name).name
    return base[: -len(Path(base).suffix)] if Path(base).suffix.lower() in IMAGE_EXTS else base


def _ids_of(mask: np.ndarray) -> list[int]:
    vals = np.unique(mask)
    return [int(v) for v in vals if v != 0 and v != VOID_LABEL]


def _match_by_stem(frames: list[Path], masks: list[Path]) -> list[Path | None]:
    """Pair masks with frames by file stem; if no stem matches but counts agree, pair by order."""
    by_stem = {m.stem: m for m in masks}
    out: list[Path | None] = [by_stem.get(f.stem) for f in frames]
    if masks and not any(out) and len(masks) == len(frames):
        return list(masks)
    return out


# -- DAVIS --------------------------------------------------------------------------------------------------
def _davis_names(root: Path, year: int, set_name: str | None, resolution: str, img_root: Path) -> list[str]:
    if set_name and set_name != "all":
        sets = root / "ImageSets"
        for cand in (sets / str(year) / f"{set_name}.txt", sets / resolution / f"{set_name}.txt"):
            if cand.is_file():
                return _parse_davis_set(cand)
        others = sorted(sets.glob(f"*/{set_name}.txt")) if sets.is_dir() else []
        if others:
            return _parse_davis_set(others[0])
        warnings.warn(f"no ImageSets/*/{set_name}.txt under {root}; using every sequence folder", stacklevel=3)
    return sorted(p.name for p in img_root.iterdir() if p.is_dir())


def _parse_davis_set(path: Path) -> list[str]:
    names: list[str] = []
    for line in _read_list(path):
        first = line.split()[0]
        if "/" in first:  # DAVIS-2016 style: "/JPEGImages/480p/<seq>/00000.jpg /Annotations/..."
            parts = [p for p in first.split("/") if p]
            if len(parts) < 2:
                raise DatasetError(f"cannot parse sequence list line {line!r} in {path}")
            first = parts[-2]
        if first not in names:
            names.append(first)
    if not names:
        raise DatasetError(f"sequence list is empty: {path}")
    return names


def _davis_attributes(root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cand in (root / "Annotations" / "db_info.yml", root / "db_info.yml", root / "Annotations" / "db_info.yaml"):
        if cand.is_file():
            for entry in _load_db_info(cand):
                if isinstance(entry, dict) and "name" in entry:
                    out.setdefault(str(entry["name"]), {}).update({k: v for k, v in entry.items() if k != "name"})
            break
    sem = root / "davis_semantics.json"
    if sem.is_file():
        try:
            data = json.loads(sem.read_text())
        except (OSError, ValueError):
            raise DatasetError(f"cannot parse {sem} as JSON") from None
        if isinstance(data, dict):
            for name, value in data.items():
                out.setdefault(str(name), {})["semantics"] = value
    return out


def _load_db_info(path: Path) -> list[Any]:
    """`sequences:` list of DAVIS ``db_info.yml`` (needs PyYAML: ``pip install "rtvos[eval]"``)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    return parse_db_info(text, path)


def parse_db_info(text: str, path: str | os.PathLike[str] = "db_info.yml") -> list[Any]:
    """The ``sequences:`` list of a DAVIS ``db_info.yml`` text, read with ``yaml.safe_load``."""
    try:
        import yaml
    except ImportError:
        raise DatasetError(f"reading {path} needs PyYAML: pip install 'rtvos[eval]'") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise DatasetError(f"cannot parse {path} as YAML{at}") from None
    seqs = data.get("sequences", []) if isinstance(data, dict) else []
    return seqs if isinstance(seqs, list) else []


def read_davis(
    root: str | os.PathLike[str], year: int = 2017, set: str | None = "val", resolution: str = "480p"
) -> list[Sequence]:
    """DAVIS sequences of one set (see the module docstring for the layout)."""
    if year not in (2016, 2017):
        raise DatasetError(f"DAVIS year must be 2016 or 2017, got {year}")
    r = _require_dir(Path(root), "DAVIS root")
    img_root = _require_dir(r / "JPEGImages" / resolution, f"DAVIS frames folder JPEGImages/{resolution}")
    ann_root = _require_dir(r / "Annotations" / resolution, f"DAVIS masks folder Annotations/{resolution}")
    attrs = _davis_attributes(r)
    seqs: list[Sequence] = []
    for name in _davis_names(r, year, set, resolution, img_root):
        fdir = img_root / name
        if not fdir.is_dir():
            raise DatasetError(f"DAVIS sequence {name!r} listed but {fdir} is missing")
        frames = _images_in(fdir)
        if not frames:
            raise DatasetError(f"DAVIS sequence {name!r} has no frames in {fdir}")
        mdir = ann_root / name
        gts: list[Path | None] = [
            (mdir / f"{f.stem}.png") if (mdir / f"{f.stem}.png").is_file() else None for f in frames
        ]
        if gts[0] is None:
            raise DatasetError(f"DAVIS sequence {name!r} has no first-frame mask {mdir / (frames[0].stem + '.png')}")
        seq = Sequence(
            name=name,
            frame_paths=frames,
            gt_paths=gts,
            object_ids=[1],
            attributes=dict(attrs.get(name, {})),
            mask_mode="binary" if year == 2016 else "ids",
        )
        if year == 2017:
            seq.object_ids = _ids_of(seq.first_mask())
        seq.attributes.setdefault("year", year)
        seqs.append(seq)
    return seqs


# -- SegTrack-v2 ---------------------------------------------------------------------------------------------
def _segtrack_frames(root: Path, name: str) -> list[Path]:
    fdir = _require_dir(root / "JPEGImages" / name, f"SegTrack-v2 frames of {name!r}")
    listing = root / "ImageSets" / f"{name}.txt"
    if listing.is_file():
        lines = _read_list(listing)
        stems = lines[1:] if lines and lines[0].rstrip("/").endswith(name) else lines
        by_stem: dict[str, Path] = {}
        for p in _images_in(fdir):
            by_stem.setdefault(p.stem, p)
        frames = [by_stem[s] for s in map(_strip_image_ext, stems) if s in by_stem]
        if frames:
            return frames
    frames = _images_in(fdir)
    if not frames:
        raise DatasetError(f"SegTrack-v2 sequence {name!r} has no frames in {fdir}")
    return frames


def read_segtrack(root: str | os.PathLike[str], set: str | None = "all") -> list[Sequence]:
    """SegTrack-v2 sequences (see the module docstring for the layout)."""
    r = _require_dir(Path(root), "SegTrack-v2 root")
    img_root = _require_dir(r / "JPEGImages", "SegTrack-v2 frames folder JPEGImages")
    gt_root = _require_dir(r / "GroundTruth", "SegTrack-v2 masks folder GroundTruth")
    listing = r / "ImageSets" / f"{set or 'all'}.txt"
    if listing.is_file():
        names = [n.lstrip("*").strip() for n in _read_list(listing)]
    elif set not in (None, "all"):
        raise DatasetError(f"SegTrack-v2 set list not found: {listing}")
    else:
        names = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    seqs: list[Sequence] = []
    for name in names:
        frames = _segtrack_frames(r, name)
        gdir = _require_dir(gt_root / name, f"SegTrack-v2 masks of {name!r}")
        subdirs = sorted((p for p in gdir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        if subdirs:
            per_obj = {int(d.name): _match_by_stem(frames, _images_in(d)) for d in subdirs}
            obj_paths: list[dict[int, Path] | None] = []
            for i in range(len(frames)):
                here: dict[int, Path] = {}
                for k, paths in per_obj.items():
                    if (p := paths[i]) is not None:
                        here[k] = p
                obj_paths.append(here or None)
            gts: list[Path | None] = [next(iter(d.values())) if d else None for d in obj_paths]
            seq = Sequence(name, frames, gts, sorted(per_obj), mask_mode="objects", gt_object_paths=obj_paths)
        else:
            gts = _match_by_stem(frames, _images_in(gdir))
            seq = Sequence(name, frames, gts, [1], mask_mode="binary")
        if all(g is None for g in seq.gt_paths):
            raise DatasetError(f"SegTrack-v2 sequence {name!r}: no mask in {gdir} matches a frame name")
        seq.score_last_frame = True
        seqs.append(_start_at_first_annotation(seq))
    return seqs


# -- YouTube-Objects ----------------------------------------------------------------------------------------
def _frame_number(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def _start_at_first_annotation(seq: Sequence) -> Sequence:
    first = next((i for i, g in enumerate(seq.gt_paths) if g is not None), None)
    if first is None:
        raise DatasetError(f"{seq.name}: no annotated frame")
    if first:
        seq.frame_paths = seq.frame_paths[first:]
        seq.gt_paths = seq.gt_paths[first:]
        if seq.gt_object_paths is not None:
            seq.gt_object_paths = seq.gt_object_paths[first:]
        seq.attributes["first_frame"] = first
    return seq


def _yto_frames_dir(root: Path, rel: Path, shot_dir: Path) -> Path | None:
    for base in (root / "v1", root / "frames", root / "JPEGImages", root.parent / "v1"):
        cand = base / rel
        if cand.is_dir() and _images_in(cand):
            return cand
    return shot_dir if _images_in(shot_dir) else None


def read_youtube_objects(root: str | os.PathLike[str], set: str | None = None) -> list[Sequence]:
    """YouTube-Objects shots with their sparse masks; ``set`` picks one category (None/"all": every one)."""
    r = _require_dir(Path(root), "YouTube-Objects root")
    if (r / "JPEGImages").is_dir() and (r / "Annotations").is_dir():
        return _read_sparse_davis_like(r, set)
    mask_root = r / "youtube_masks" if (r / "youtube_masks").is_dir() else r
    label_dirs = sorted(mask_root.glob("*/data/*/shots/*/labels"))
    if not label_dirs:
        raise DatasetError(
            f"no YouTube-Objects masks under {r}: expected [youtube_masks/]<category>/data/<video>/shots/<shot>/labels/"
        )
    seqs: list[Sequence] = []
    for ldir in label_dirs:
        shot_dir = ldir.parent
        rel = shot_dir.relative_to(mask_root)
        category, video, shot = rel.parts[0], rel.parts[2], rel.parts[4]
        if set not in (None, "all") and category != set:
            continue
        labels = {n: p for p in _images_in(ldir) if (n := _frame_number(p)) is not None}
        if not labels:
            continue
        fdir = _yto_frames_dir(r, rel, shot_dir)
        if fdir is None:
            raise DatasetError(f"no frames for YouTube-Objects shot {rel} (looked in v1/, frames/, the shot folder)")
        frames = sorted(((n, p) for p in _images_in(fdir) if (n := _frame_number(p)) is not None), key=lambda x: x[0])
        name = f"{category}_{video}_{shot}"
        seq = Sequence(
            name=name,
            frame_paths=[p for _, p in frames],
            gt_paths=[labels.get(n) for n, _ in frames],
            object_ids=[1],
            attributes={"category": category, "video": video, "shot": shot},
            mask_mode="binary",
            score_last_frame=True,
            resize_gt_to_frame=True,
        )
        if all(g is None for g in seq.gt_paths):
            raise DatasetError(f"YouTube-Objects shot {rel}: no label number matches a frame number in {fdir}")
        seqs.append(_start_at_first_annotation(seq))
    if not seqs:
        raise DatasetError(f"no YouTube-Objects shots for category {set!r} under {r}")
    return seqs


def _read_sparse_davis_like(root: Path, set: str | None) -> list[Sequence]:
    img_root, ann_root = root / "JPEGImages", root / "Annotations"
    names = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    if set not in (None, "all"):
        names = [n for n in names if n == set or n.startswith(f"{set}_") or n.startswith(f"{set}-")]
    seqs: list[Sequence] = []
    for name in names:
        frames = _images_in(img_root / name)
        masks = _images_in(ann_root / name) if (ann_root / name).is_dir() else []
        by_stem = {m.stem: m for m in masks}
        gts: list[Path | None] = [by_stem.get(f.stem) for f in frames]
        if not frames or all(g is None for g in gts):
            raise DatasetError(f"sequence {name!r}: no frames or no mask matching a frame name under {root}")
        seq = Sequence(name, frames, gts, [1], mask_mode="binary", score_last_frame=True, resize_gt_to_frame=True)
        seqs.append(_start_at_first_annotation(seq))
    if not seqs:
        raise DatasetError(f"no sequences under {img_root}")
    return seqs


# -- dispatcher ---------------------------------------------------------------------------------------------
_ALIASES: dict[str, str] = {
    alias: key
    for key, aliases in {
        "davis2016": ("davis2016", "davis-2016", "davis16"),
        "davis2017": ("davis2017", "davis-2017", "davis17", "davis"),
        "segtrack": ("segtrack", "segtrackv2", "segtrack-v2", "segtrack2"),
        "youtube-objects": ("youtube-objects", "youtubeobjects", "youtube_objects", "yto"),
    }.items()
    for alias in aliases
}


def load_dataset(
    root: str | os.PathLike[str], name: str = "davis2017", set: str | None = None, resolution: str = "480p"
) -> list[Sequence]:
    """Read a benchmark by name: davis2016 | davis2017 | segtrack | youtube-objects (``set`` defaults per dataset)."""
    key = _ALIASES.get(name.lower())
    if key is None:
        raise DatasetError(f"unknown dataset {name!r}; expected davis2016, davis2017, segtrack or youtube-objects")
    if key == "davis2016":
        return read_davis(root, 2016, set or "val", resolution)
    if key == "davis2017":
        return read_davis(root, 2017, set or "val", resolution)
    if key == "segtrack":
        return read_segtrack(root, set or "all")
    return read_youtube_objects(root, set)
