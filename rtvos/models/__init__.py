from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .embedding import FCNResNet
from .hub import DEFAULT_MODEL, RandomWeightsWarning, load_model, load_model_reporting
from .matching import MATCHING_VARIANTS, MatchingHead
from .registry import create_model, list_models, model_name, register_model
from .rpmnet import SIZE_MULTIPLE, STRIDE, RPMNet, RPMNetConfig, resize_flow, warp

__all__ = [
    "CheckpointError", "load_checkpoint", "read_checkpoint", "save_checkpoint", "FCNResNet", "DEFAULT_MODEL",
    "RandomWeightsWarning", "load_model", "load_model_reporting", "MATCHING_VARIANTS", "MatchingHead", "create_model", "list_models",
    "model_name", "register_model", "SIZE_MULTIPLE", "STRIDE", "RPMNet", "RPMNetConfig", "resize_flow", "warp",
]
