"""The streams file (``rtvos serve STREAMS.yaml``) and the API's request bodies, validated by pydantic.

    streams:
      - id: cam1
        source: rtsp://127.0.0.1:8554/cam1   # anything rtvos segment takes
        mask: cam1_first.png                 # or box: X1,Y1,X2,Y2 (several: boxes:), or points: [X,Y, ...]
        out: out/cam1                        # PNG masks + overlay.mp4, as rtvos segment --out

Boxes are x1,y1,x2,y2 in pixels, as everywhere in rtvos; ``box_format: xywh`` (a stream's, or a re-anchor
request's key) takes x,y,w,h instead. Relative paths (source, mask, out, jsonl, mask_video) are taken from the
streams file's folder. Any problem is one line naming the stream and the key (`InputError`), before a model
loads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..common import BOX_FORMAT, BOX_FORMATS
from ..io.base import InputError
from ..io.prompt import Box, Point, box_from, check_point, parse_box, parse_point

__all__ = ["ReanchorRequest", "ServeConfig", "StreamSpec", "load_config", "parse_config", "one_line_validation"]

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _box(value: Any, info: ValidationInfo) -> Box:
    """A box in the entry's ``box_format`` (x1,y1,x2,y2 unless it says xywh) → the checked (x, y, w, h)."""
    fmt = info.data.get("box_format", BOX_FORMAT)
    if isinstance(value, str):
        return parse_box(value, fmt=fmt)
    if isinstance(value, (list, tuple)):
        return box_from(tuple(value), fmt, shown=",".join(map(str, value)))
    form = "X1,Y1,X2,Y2' or [x1, y1, x2, y2]" if fmt == "xyxy" else "X,Y,W,H' or [x, y, w, h]"
    raise InputError(f"box must be '{form}, got {value!r}")


def _point(value: Any) -> Point:
    if isinstance(value, str):
        return parse_point(value)
    if isinstance(value, (list, tuple)):
        return check_point(tuple(value))
    raise InputError(f"point must be 'X,Y[,+|-]' or [x, y(, positive)], got {value!r}")


class StreamSpec(BaseModel):
    """One stream: where it comes from, its first-frame prompt (one kind) and what it writes."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str | int = Field(description="video file, folder of frames, webcam index, or rtsp/rtmp/http URL")
    mask: str | None = Field(None, description="first-frame mask PNG")
    box_format: str = Field(BOX_FORMAT, pattern=f"^({'|'.join(BOX_FORMATS)})$",
                            description="how box/boxes are written: xyxy (x1,y1,x2,y2, the default) or xywh")
    box: Box | None = Field(None, description="one object box X1,Y1,X2,Y2 in pixels (as rtvos segment --box)")
    boxes: list[Box] = Field(default_factory=list, description="several object boxes, X1,Y1,X2,Y2 each")
    points: list[Point] = Field(default_factory=list, description="clicks X,Y (object) or X,Y,- (background)")
    out: str | None = Field(None, description="output folder: %05d.png masks (+ overlay.mp4 unless overlay: false)")
    overlay: bool = True
    jsonl: str | None = Field(None, description="per-frame JSON lines log (boxes, COCO RLE)")
    mask_video: str | None = Field(None, description="the masks as an MP4")
    max_frames: int | None = Field(None, ge=1)
    pace: bool = Field(False, description="replay a file at its frame rate, as a camera would send it")
    policy: str | None = Field(None, pattern="^(drop|block)$")
    transport: str | None = Field(None, pattern="^(tcp|udp)$")
    exist_ok: bool = False

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"stream id must be 1-64 letters, digits, '-', '_' or '.', got {v!r}")
        return v

    @field_validator("box", mode="before")
    @classmethod
    def _check_box(cls, v: Any, info: ValidationInfo) -> Any:
        return None if v is None else _box(v, info)

    @field_validator("boxes", mode="before")
    @classmethod
    def _check_boxes(cls, v: Any, info: ValidationInfo) -> Any:
        return [_box(b, info) for b in (v if isinstance(v, list) else [v])] if v is not None else []

    @field_validator("points", mode="before")
    @classmethod
    def _check_points(cls, v: Any) -> Any:
        return [_point(p) for p in (v if isinstance(v, list) else [v])] if v is not None else []

    @model_validator(mode="after")
    def _one_prompt(self) -> StreamSpec:
        if self.mask is not None and (self.box or self.boxes or self.points):
            raise ValueError("give either mask or box/boxes/points, not both")
        if self.mask is None and not (self.box or self.boxes or self.points):
            raise ValueError("a first-frame prompt is needed: mask, box, boxes or points")
        return self

    @property
    def all_boxes_xyxy(self) -> list[tuple[int, int, int, int]]:
        """The boxes as (x1, y1, x2, y2), what `rtvos.track` / `MultiTracker.add` take."""
        return [(x, y, x + w, y + h) for x, y, w, h in ([self.box] if self.box else []) + self.boxes]

    def resolved(self, base: Path) -> StreamSpec:
        """Relative paths taken from ``base`` (the streams file's folder); URLs and webcam indices as given."""
        def rel(p: str | None) -> str | None:
            return None if p is None else str(p if os.path.isabs(p) else base / p)

        src: str | int = self.source
        if isinstance(src, str) and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", src) and not src.isdigit() \
                and not src.startswith("/dev/"):
            src = str(rel(src))
        return self.model_copy(update=dict(source=src, mask=rel(self.mask), out=rel(self.out), jsonl=rel(self.jsonl),
                                           mask_video=rel(self.mask_video)))


class ServeConfig(BaseModel):
    """The whole streams file; model options are the CLI's (--model, --size, ...) and may be set here too."""

    model_config = ConfigDict(extra="forbid")

    streams: list[StreamSpec] = Field(default_factory=list)
    model: str | None = None
    size: int | None = None
    backend: str | None = None
    device: str | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> ServeConfig:
        seen: set[str] = set()
        for s in self.streams:
            if s.id in seen:
                raise ValueError(f"stream id {s.id!r} appears twice")
            seen.add(s.id)
        return self


class ReanchorRequest(BaseModel):
    """Re-anchor a running stream on its next frame from boxes and/or points drawn on it."""

    model_config = ConfigDict(extra="forbid")

    box_format: str = Field(BOX_FORMAT, pattern=f"^({'|'.join(BOX_FORMATS)})$")
    boxes: list[Box] = Field(default_factory=list)
    points: list[Point] = Field(default_factory=list)

    _check_boxes = field_validator("boxes", mode="before")(StreamSpec._check_boxes.__func__)  # type: ignore[attr-defined]
    _check_points = field_validator("points", mode="before")(StreamSpec._check_points.__func__)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _something(self) -> ReanchorRequest:
        if not self.boxes and not self.points:
            raise ValueError("give boxes and/or points to re-anchor on")
        return self


def one_line_validation(err: ValidationError, where: str = "") -> str:
    """pydantic's report as one line: the first problem, its location (``streams.1.box``) and value."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ()))
    msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return " ".join(f"{where}{loc + ': ' if loc else ''}{msg}{more}".split())


def parse_config(text: str, where: str = "streams file") -> ServeConfig:
    """YAML text → `ServeConfig`; every problem is one `InputError` line."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{where} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError(f"{where} must be a mapping with a 'streams:' list, got {type(doc).__name__}")
    try:
        return ServeConfig.model_validate(doc)
    except ValidationError as err:
        raise InputError(one_line_validation(err, f"{where}: ")) from None


def load_config(path: str | os.PathLike[str]) -> ServeConfig:
    """Read a streams file; relative paths in it are taken from its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such streams file: {p}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read streams file {p}: {err}") from None
    cfg = parse_config(text, str(p))
    base = p.parent.absolute()
    return cfg.model_copy(update=dict(streams=[s.resolved(base) for s in cfg.streams]))
