"""What `rtvos bench` prints and draws: the terminal report and the latency plot, both from the result dict
(also from a JSON read back)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..stats import percentile

__all__ = ["format_report", "plot_result"]


def _f(v: Any, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def format_report(r: dict[str, Any]) -> str:
    """The header, the per-stage table (with share of end to end), cached vs uncached, and the backend table."""
    m, s, v = r["machine"], r["settings"], r["versions"]
    gpu = ", ".join(g["name"] for g in m["gpu"]) if m["gpu"] else "no GPU"
    la = lambda x: " ".join(f"{a:.2f}" for a in x) if x else "?"  # noqa: E731
    size = "x".join(str(x) for x in s["size"]) if s["size"][0] != s["size"][1] else str(s["size"][0])
    lines = [
        f"machine  {m['cpu']}, {m['logical_cores']} logical cores ({m.get('usable_cores')} usable), "
        f"{m['ram_gb']} GB RAM, {gpu}; load avg {la(m['loadavg_start'])} (start) -> {la(m['loadavg_end'])} (end)",
        "versions " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"settings {s['source']} {s['frame_size'][1]}x{s['frame_size'][0]}, model {s['model']}"
        f"{' (RANDOM weights)' if s.get('random_weights') else ''}, S={size}, backend {s['backend']} "
        f"{s['backend_precision']}, device {s['device']}, threads {s['threads']} (opencv {s['opencv_threads']}), "
        f"{s['warmup']} warm-up + {s['frames']} frames, clock {s['clock']['end_to_end']}"
        + (", env " + " ".join(f"{k}={val}" for k, val in s["env"].items()) if s.get("env") else ""),
    ]
    if s.get("pipeline_model"):
        lines.append(f"pipeline {s['pipeline_model']}; backend rows: {s.get('backends_network', s['model'])}")
    if s.get("backend_note"):
        lines.append(f"note     {s['backend_note']}")
    e = r["end_to_end"]
    lines += ["", f"{'stage':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'share':>8}"]
    for name, st in r["stages"].items():
        share = st["mean_ms"] / e["mean_ms"] if e["mean_ms"] else 0.0
        lines.append(f"{name:<14}{st['p50_ms']:>9.2f}{st['p95_ms']:>9.2f}{st['p99_ms']:>9.2f}{st['max_ms']:>9.2f}"
                     f"{share:>8.1%}")
    lines.append(f"{'(other)':<14}{'':>36}{e['unaccounted_mean_ms'] / e['mean_ms']:>8.1%}")
    lines.append(f"{'end to end':<14}{e['p50_ms']:>9.2f}{e['p95_ms']:>9.2f}{e['p99_ms']:>9.2f}{e['max_ms']:>9.2f}"
                 f"{'100%':>8}   {e['fps']:.1f} fps (sequential: one frame at a time, the latency view)")
    if "threaded" in e:
        t = e["threaded"]
        lines.append(f"{'threaded':<14}{'':>36}{'':>8}   {t['fps']:.1f} fps ({t['frames']} frames through the "
                     "reader → model → writer pipeline of `rtvos segment`, MP4 + PNG sinks)")
        if t.get("latency_p50_ms") is not None:
            lines.append(f"{'':<14}{'':>36}{'':>8}   latency p50 {t['latency_p50_ms']:.1f} ms, p95 "
                         f"{t['latency_p95_ms']:.1f} ms (decoded → every sink done), dropped {t.get('dropped', 0)}")
    c = r["compute"]
    if c:
        lines.append(f"compute floor {c['gflops_per_frame']:.2f} GFLOP/frame (deform conv "
                     f"{c['deform_conv_flops'] / 1e9:.2f}) / {c['peak_gflops']:.1f} GFLOP/s peak "
                     f"({c['peak_method']}) = {c['floor_ms']:.2f} ms")
    cu = r["cached_vs_uncached"]
    lines += ["", f"cached vs uncached step ({cu['backend']}, interleaved): p50 {cu['cached_p50_ms']:.1f} / "
              f"{cu['uncached_p50_ms']:.1f} ms (p95 {cu['cached_p95_ms']:.1f} / {cu['uncached_p95_ms']:.1f}) "
              f"-> ratio {cu['ratio']:.2f}"]
    lines += ["", f"{'backend':<12}{'prec':<6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'net p50':>9}{'floor':>8}"
              f"{'IoU mean':>10}{'IoU min':>9}{'setup s':>9}"]
    for name, b in r["backends"].items():
        if b["status"] != "ok":
            lines.append(f"{name:<12}{b.get('precision', '-'):<6}  {b['status']}: {b['reason']}")
            continue
        lines.append(f"{name:<12}{b['precision']:<6}{b['p50_ms']:>9.2f}{b['p95_ms']:>9.2f}{b['p99_ms']:>9.2f}"
                     f"{b['net_p50_ms']:>9.2f}{_f(b.get('floor_ms'), '.2f'):>8}{b['iou_vs_eager']:>10.4f}"
                     f"{b['iou_vs_eager_min']:>9.4f}{b['setup_s']:>9.1f}")
    fl = r.get("flow")
    if fl:
        lines.append(f"{'flow (DIS)':<12}{'-':<6}{fl['p50_ms']:>9.2f}{fl['p95_ms']:>9.2f}{fl['p99_ms']:>9.2f}"
                     f"{'-':>9}{'-':>8}{fl['iou_vs_eager']:>10.4f}{fl['iou_vs_eager_min']:>9.4f}{'-':>9}")
    lines.append("(step = Segmenter.step, preprocess → postprocess; net = embed + match inside it; IoU vs eager "
                 "fp32 on the same frames)")
    motion = next((b["reference_motion"] for b in r["backends"].values() if "reference_motion" in b), None)
    if motion is not None:
        lines.append(f"eager masks change by {motion:.1%} per frame (mean 1 - IoU of consecutive masks)"
                     + ("; IoU vs eager cannot tell a faithful backend from a copy here" if motion < 0.01 else ""))
    return "\n".join(lines)


def plot_result(r: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Histogram of end-to-end and per-backend step latency, and per-frame latency with the stages stacked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state
    from matplotlib.figure import Figure

    samples = r["samples_ms"]
    fig = Figure(figsize=(13, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax_hist, ax_frames = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    series = {"end to end": samples["end_to_end"], **{f"step {k}": v for k, v in samples["backends"].items()}}
    hi = max(max(v) for v in series.values() if v)
    lo = min(min(v) for v in series.values() if v)
    bins = np.geomspace(max(lo, 1e-3), hi * 1.01, 50) if hi > 0 else 50
    for name, values in series.items():
        ax_hist.hist(values, bins=bins, histtype="step", linewidth=1.5,
                     label=f"{name} (p50 {percentile(values, 50):.1f}, p99 {percentile(values, 99):.1f})")
    ax_hist.set_xscale("log")
    ax_hist.set_xlabel("latency [ms] (log)")
    ax_hist.set_ylabel("frames")
    ax_hist.set_title("latency histogram")
    ax_hist.legend(fontsize=7)
    names = list(samples["stages"])
    x = np.arange(len(samples["end_to_end"]))
    ax_frames.stackplot(x, *[samples["stages"][n] for n in names], labels=names, alpha=0.8)
    ax_frames.plot(x, samples["end_to_end"], color="k", linewidth=1, label="end to end")
    e = r["end_to_end"]
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        ax_frames.axhline(e[q], color="k", linestyle=":", linewidth=0.8)
        ax_frames.annotate(q.removesuffix("_ms"), (x[-1] if len(x) else 0, e[q]), fontsize=7, va="bottom")
    if r.get("compute"):
        ax_frames.axhline(r["compute"]["floor_ms"], color="r", linestyle="--", linewidth=1, label="compute floor")
    ax_frames.set_xlabel("measured frame")
    ax_frames.set_ylabel("latency [ms]")
    s = r["settings"]
    ax_frames.set_title(f"per frame: {s['backend']} {s['backend_precision']}, S={s['size'][0]}, "
                        f"{s['threads']} threads, {e['fps']:.1f} fps")
    ax_frames.legend(fontsize=7, loc="upper left", ncol=2)
    load = r["machine"].get("loadavg_start")
    fig.suptitle(f"rtvos bench: {s['source']} on {r['machine']['cpu']}"
                 + (f", load avg {load[0]:.1f} at start" if load else ""), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


