"""rtvos: real-time streaming video object segmentation with RPM-Net.

The public names load on first use (PEP 562), so `import rtvos` and the CLI's `--help`/`--version` do not pay for
importing torch. Importing rtvos changes nothing in the process (the CLI sets OMP_WAIT_POLICY itself).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (tests/test_cli.py checks that it matches __all__)
_LAZY = {
    "create_model": ".models", "list_models": ".models", "load_model": ".models", "load_network": ".models",
    "Result": ".results",
    "Segmenter": ".segmenter", "SegmenterState": ".segmenter", "StepResult": ".segmenter",
    "Tracking": ".track", "track": ".track",
    "MultiTracker": ".multi",
    "InputError": ".io.base", "Stopped": ".common", "PipelineSummary": ".pipeline",
}
__all__ = ["create_model", "list_models", "load_model", "load_network", "InputError", "MultiTracker",
           "PipelineSummary", "Result", "Segmenter", "SegmenterState", "StepResult", "Stopped", "Tracking",
           "track", "__version__"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from .common import Stopped as Stopped
    from .io.base import InputError as InputError
    from .models import create_model as create_model
    from .models import list_models as list_models
    from .models import load_model as load_model
    from .models import load_network as load_network
    from .multi import MultiTracker as MultiTracker
    from .pipeline import PipelineSummary as PipelineSummary
    from .results import Result as Result
    from .segmenter import Segmenter as Segmenter
    from .segmenter import SegmenterState as SegmenterState
    from .segmenter import StepResult as StepResult
    from .track import Tracking as Tracking
    from .track import track as track


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtvos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """`rtvos.track` names both a submodule and the function users call: importing the submodule (which the
    import system records as an attribute of this package) must not replace the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
