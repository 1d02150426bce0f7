import os

# Before torch is imported: sleeping OpenMP workers. Spinning ones made steps ~10-30x slower on a loaded
# 2-core machine (CI runners are shared), see apps/cli.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import warnings

import pytest

from rtvos.models import RandomWeightsWarning


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    # Tests use untrained models on purpose; the warning is asserted where it matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # ONNX exports etc. go to a per-session folder, not the user's ~/.cache (subprocess CLIs inherit it).
    # RTVOS_CACHE_DIR would take precedence over RTVOS_CACHE (rtvos.cache), so it is unset meanwhile.
    old = os.environ.get("RTVOS_CACHE")
    old_dir = os.environ.pop("RTVOS_CACHE_DIR", None)
    os.environ["RTVOS_CACHE"] = str(tmp_path_factory.mktemp("rtvos-cache"))
    yield
    if old is None:
        os.environ.pop("RTVOS_CACHE", None)
    else:
        os.environ["RTVOS_CACHE"] = old
    if old_dir is not None:
        os.environ["RTVOS_CACHE_DIR"] = old_dir


@pytest.fixture(autouse=True)
def _restore_logging():
    """`rtvos -v` configures logging for the process (as a CLI should); tests call main() in-process, so drop the
    CLI's stderr handler and level before and after each test instead of letting one run's -vv leak DEBUG lines
    into another test's stderr."""
    import logging

    def reset() -> None:
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if type(h).__name__ != "StderrHandler"]
        logging.getLogger("rtvos").setLevel(logging.NOTSET)

    reset()
    yield
    reset()
