from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .embedding import FCNResNet
from .flow_model import FLOW_MODELS, FlowModel
from .hub import (
    DEFAULT_MODEL,
    DEFAULT_NETWORK,
    SHIPPED,
    RandomWeightsWarning,
    default_weights_path,
    load_model,
    load_model_reporting,
    load_network,
    model_names,
    shipped_weights_path,
)
from .matching import MATCHING_VARIANTS, MatchingHead
from .registry import create_model, list_models, model_name, register_model
from .rpmnet import SIZE_MULTIPLE, STRIDE, RPMNet, RPMNetConfig, resize_flow, warp

__all__ = [
    "CheckpointError", "load_checkpoint", "read_checkpoint", "save_checkpoint", "FCNResNet", "DEFAULT_MODEL",
    "DEFAULT_NETWORK", "SHIPPED", "default_weights_path", "shipped_weights_path",
    "FLOW_MODELS", "FlowModel", "load_network", "model_names", "RandomWeightsWarning", "load_model",
    "load_model_reporting", "MATCHING_VARIANTS", "MatchingHead", "create_model", "list_models",
    "model_name", "register_model", "SIZE_MULTIPLE", "STRIDE", "RPMNet", "RPMNetConfig", "resize_flow", "warp",
]
