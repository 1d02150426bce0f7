"""Benchmark evaluation: DAVIS J/F metrics (official protocol), dataset readers and label-free baselines."""

from __future__ import annotations

from ..common import lazy_attributes
from .baselines import CopyBaseline, FlowBaseline
from .datasets import (
    DatasetError,
    Sequence,
    load_dataset,
    read_davis,
    read_label_image,
    read_segtrack,
    read_youtube_objects,
)
from .metrics import (
    BOUND_TH,
    GLOBAL_COLUMNS,
    DatasetScores,
    SequenceScores,
    boundary_f,
    db_statistics,
    evaluate_dataset,
    evaluate_sequence,
    jaccard,
)

__all__ = [
    "BOUND_TH",
    "GLOBAL_COLUMNS",
    "CopyBaseline",
    "DatasetError",
    "DatasetScores",
    "FlowBaseline",
    "Sequence",
    "SequenceScores",
    "boundary_f",
    "db_statistics",
    "evaluate_dataset",
    "evaluate_sequence",
    "jaccard",
    "load_dataset",
    "read_davis",
    "read_label_image",
    "read_segtrack",
    "read_youtube_objects",
]

#: The evaluation runner and ablations, and the knobs `rtvos eval` sets (what the apps import).
_LAZY = {
    "ablation_markdown": ".analysis", "attribute_markdown": ".analysis", "discover_checkpoints": ".analysis",
    "run_ablation": ".analysis", "write_ablation_csv": ".analysis", "APPEARANCE_METHODS": ".runner",
    "METHODS": ".runner", "MethodRun": ".runner", "build_method": ".runner", "plot_jf_bars": ".runner",
    "run_benchmark": ".runner", "run_summary": ".runner", "score_results": ".runner", "write_report": ".runner",
    "GridConfig": "..appearance", "FLOW_PRESETS": "..flow"
}
__all__ += list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
