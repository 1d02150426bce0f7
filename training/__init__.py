"""Self-supervised RPM-Net training (imports rtvos; rtvos never imports this package)."""

from .data import VIDEO_EXTENSIONS, Clip, PairDataset, PairSampler, find_clips
from .train import TrainConfig, TrainResult, latest_checkpoint, poly_lr, train

__all__ = ["VIDEO_EXTENSIONS", "Clip", "PairDataset", "PairSampler", "find_clips", "TrainConfig", "TrainResult",
           "latest_checkpoint", "poly_lr", "train"]
