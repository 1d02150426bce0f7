"""rtvos: real-time streaming video object segmentation with RPM-Net."""

import os as _os
import sys as _sys

# The CLI (`rtvos ...`, `python -m rtvos[.training.X]`) asks for sleeping OpenMP workers unless the user chose
# otherwise (see rtvos.apps.cli._quiet_openmp); libgomp reads this when torch loads, i.e. in the import below,
# which every `rtvos.apps.*` import runs first. Library users' processes are left as they are.
if "torch" not in _sys.modules and _sys.argv[:1] and (_sys.argv[0] == "-m" or _os.path.basename(_sys.argv[0]) in ("rtvos", "rtvos.exe")):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .models import create_model, list_models, load_model
from .multi import MultiTracker
from .results import Result
from .segmenter import Segmenter, SegmenterState, StepResult
from .track import Tracking, track

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "load_model", "MultiTracker", "Result", "Segmenter", "SegmenterState", "StepResult", "Tracking",
           "track", "__version__"]
