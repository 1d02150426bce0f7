"""rtvos: real-time streaming video object segmentation with RPM-Net."""

from .models import create_model, list_models, load_model
from .segmenter import Segmenter, SegmenterState, StepResult

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "Segmenter", "SegmenterState", "StepResult", "__version__"]
