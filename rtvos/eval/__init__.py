"""Benchmark evaluation: DAVIS J/F metrics (official protocol), dataset readers and label-free baselines."""

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
