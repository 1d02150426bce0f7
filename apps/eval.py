"""`rtvos eval ROOT --set NAME --out DIR`: run methods on a benchmark (or rescore results) and report J/F."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from rtvos.common import APPEARANCE_MODES, AUTO, BUILTIN_BACKENDS, DEFAULT_APPEARANCE


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="run and score methods on DAVIS / SegTrack-v2 / YouTube-Objects")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--set", dest="set_name", default=None, help="sequence set, e.g. val or dev (default per dataset)")
    p.add_argument("--dataset", default="davis2017", help="davis2016 | davis2017 | segtrack | youtube-objects")
    p.add_argument("--resolution", default="480p", help="DAVIS resolution folder (default 480p)")
    p.add_argument("--out", default="rtvos_eval", help="output folder: <out>/<method>/<seq>/%%05d.png + tables")
    p.add_argument("--method", nargs="+", default=["default"], metavar="METHOD",
                   help="default | rpmnet | rpmnet-paper | copy | flow | flow-plain, each scored (default: default, i.e. "
                   "--model as `rtvos segment` runs it). rpmnet: the trained RPM-Net network (--model when it names one); "
                   "rpmnet-paper: the shipped paper-architecture model; flow: DIS through the Segmenter's own "
                   "propagator, no appearance; flow-plain: the classic hard-label DIS baseline")
    p.add_argument("--appearance", nargs="+", default=None, choices=APPEARANCE_MODES,
                   help=f"appearance stage(s) for default / rpmnet / rpmnet-paper; several give one result each "
                   f"(default {DEFAULT_APPEARANCE}; none with hard propagation or model-resolution masks)")
    p.add_argument("--appearance-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override appearance settings (rtvos.appearance.GridConfig fields), e.g. fb_preset=none "
                   "lost_ratio=0 recent_weight=0: the stage-by-stage A/B")
    p.add_argument("--flow-preset", nargs="+", default=["medium"], metavar="PRESET",
                   help="DIS preset(s) for flow / flow-plain (ultrafast, fast, medium, ultrafast-fine, medium-fine); "
                   "several give one result each (default medium)")
    p.add_argument("--propagation", choices=("soft", "hard"), default="soft",
                   help="soft: carry per-object scores between frames (default); hard: labels only")
    p.add_argument("--crf", nargs="+", default=["none"], choices=("none", "dense", "fast"),
                   help="CRF refinement(s); several give one result per method and mode")
    p.add_argument("--results", default=None,
                   help="score existing predictions in this folder (<results>/<seq>/*.png); runs no method")
    p.add_argument("--model", "--weights", dest="model", default="default",
                   help="model of the default / rpmnet methods: 'default', a name `rtvos info` lists, or a checkpoint path")
    p.add_argument("--matching", default="deformable", help="matching variant for a registered (untrained) model")
    p.add_argument("--backend", default=AUTO, choices=(AUTO, *BUILTIN_BACKENDS), help="inference backend (see `rtvos info`)")
    p.add_argument("--size", type=int, default=None, help="model input size S, a multiple of 64 (default: the checkpoint's training size, else 512)")
    p.add_argument("--device", default="auto", help="torch device for rpmnet and the fast CRF: auto (CUDA when usable, else cpu), cpu, cuda:N")
    p.add_argument("--mask-resolution", choices=("full", "model"), default="full")
    p.add_argument("--workers", type=int, default=0, help="processes for scoring (0: in-process)")
    p.add_argument("--json", metavar="PATH", dest="json_out", default=None, help="also write the machine-readable summary to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_appearance_set(items: list[str]) -> Any:
    """KEY=VALUE strings → a GridConfig (None when empty); values parse as the field's type."""
    if not items:
        return None
    import dataclasses

    from rtvos.eval import GridConfig

    fields = {f.name: f for f in dataclasses.fields(GridConfig)}
    base = GridConfig()
    kw: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--appearance-set {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        current = getattr(base, key)
        try:
            if value.lower() == "none":
                kw[key] = None
            elif isinstance(current, tuple):
                kw[key] = tuple(type(current[0])(v) for v in value.split(","))
            else:
                kw[key] = type(current)(value) if current is not None else value
        except ValueError:
            raise ValueError(f"--appearance-set {item!r}: {value!r} is not a valid {key}") from None
    return GridConfig(**kw)


def _fmt(x: float | None) -> str:
    return "  -  " if x is None or x != x else f"{x:.3f}"


def _print_run(summary: dict[str, Any], label: str) -> None:
    g = summary["global"]
    ms = summary.get("ms_per_frame")
    print(f"\n== {label}" + (f"  ({ms:.1f} ms/frame)" if ms is not None else ""))
    print("J&F    J      J-rec  J-dec  F      F-rec  F-dec")
    print("  ".join(_fmt(g[k]) for k in ("J&F", "J", "J-recall", "J-decay", "F", "F-recall", "F-decay")))
    print(f"{'sequence':<24} {'J':>6} {'F':>6} {'J&F':>6}  objects (J/F)")
    for name, s in summary["sequences"].items():
        objs = " ".join(f"{k}:{_fmt(v['J'])}/{_fmt(v['F'])}" for k, v in s["objects"].items())
        print(f"{name:<24} {_fmt(s['J']):>6} {_fmt(s['F']):>6} {_fmt(s['J&F']):>6}  {objs}")
    for attr, v in summary.get("attributes", {}).items():
        print(f"  attribute {attr:<6} J {_fmt(v['J'])}  F {_fmt(v['F'])}  ({v['sequences']} seqs)")


def run(args: argparse.Namespace) -> int:
    from rtvos.eval import (
        FLOW_PRESETS,
        METHODS,
        MethodRun,
        load_dataset,
        plot_jf_bars,
        run_benchmark,
        run_summary,
        score_results,
        write_report,
    )

    for m in args.method:
        if m not in METHODS:
            raise ValueError(f"unknown --method {m!r}; expected one of {', '.join(METHODS)}")
    for p in args.flow_preset:
        if p not in FLOW_PRESETS:
            raise ValueError(f"unknown --flow-preset {p!r}; expected one of {', '.join(FLOW_PRESETS)}")
    if args.size is not None and (args.size <= 0 or args.size % 64):
        raise ValueError(f"--size must be a positive multiple of 64, got {args.size}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    sequences = load_dataset(args.root, args.dataset, args.set_name, args.resolution)
    out = Path(args.out)
    if args.results:
        res = Path(args.results)
        mr = MethodRun(label=res.name or "results", results_dir=res)
        mr.scores = score_results(sequences, res, args.workers)
        out.mkdir(parents=True, exist_ok=True)
        mr.results_dir = out  # tables go to --out, predictions stay where they are
        write_report(mr, args.set_name, sequences)
        runs = [mr]
    else:
        from rtvos.backends import resolve_device
        from rtvos.eval import build_method

        device = str(resolve_device(args.device))

        from rtvos.eval import APPEARANCE_METHODS

        app_config = parse_appearance_set(args.appearance_set)
        applies = args.propagation == "soft" and args.mask_resolution == "full"
        appearances = args.appearance or [DEFAULT_APPEARANCE if applies else "none"]
        models: dict[str, Any] = {}
        for m in ("default", "rpmnet"):
            if m in args.method:
                from rtvos.models import load_model, load_network

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    load = load_model if m == "default" else load_network
                    models[m] = load(args.model, matching=args.matching)  # fail fast on a bad --model
                for w in caught:
                    print(f"warning: {w.message}")

        # flow methods run once per preset (flow-<preset> / flow-plain-<preset>); the appearance methods once per
        # --appearance, suffixed +<mode> when it is not the default.
        plan = {}
        for m in args.method:
            for preset in (args.flow_preset if m.startswith("flow") else [None]):
                for app in (appearances if m in APPEARANCE_METHODS else ["none"]):
                    label = m if preset is None else f"{m}-{preset}"
                    label += f"+{app}" if m in APPEARANCE_METHODS and app != DEFAULT_APPEARANCE else ""
                    plan[label] = (m, preset or "medium", app)

        def factory(label: str) -> Any:
            name, preset, app = plan[label]
            return build_method(name, models.get(name, args.model), args.size, device, args.backend,
                                args.mask_resolution, args.matching, flow_preset=preset, propagation=args.propagation,
                                appearance=app, appearance_config=app_config)
        runs = run_benchmark(sequences, out, list(plan), args.crf, args.set_name, args.workers,
                             progress=not args.quiet, method_factory=factory, crf_device=device)
    summaries = {r.label: run_summary(r, sequences) for r in runs}
    for label, s in summaries.items():
        _print_run(s, label)
    from rtvos.eval import attribute_markdown

    attrs = attribute_markdown({k: v.get("attributes", {}) for k, v in summaries.items()})
    if attrs:  # only when the dataset ships attributes (DAVIS db_info.yml)
        out.mkdir(parents=True, exist_ok=True)
        (out / "attributes.md").write_text(attrs + "\n")
        print("\nJ per attribute (%):\n" + attrs)
    chart = plot_jf_bars(runs, out / "jf_per_sequence.png",
                         title=f"J&F per sequence ({args.dataset}{' ' + args.set_name if args.set_name else ''})")
    first = next(iter(summaries.values()))
    combined = {
        "global": first["global"],
        "sequences": first["sequences"],
        "ms_per_frame": {k: v["ms_per_frame"] for k, v in summaries.items()},
        "methods": summaries,
        "dataset": args.dataset,
        "set": args.set_name,
    }
    (out / "summary.json").write_text(json.dumps(combined, indent=2))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(combined, indent=2))
    print(f"\nresults: {out}  chart: {chart}")
    return 0
