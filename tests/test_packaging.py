"""Packaging: the wheel installs everything under the `rtvos` namespace and coexists with opencv-python users.

The throwaway-venv test needs the network (PyPI) and a minute or more, so it runs only in CI
(RTVOS_SYSTEM_TESTS=1) or on request (RTVOS_PACKAGING_TESTS=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_WANTED = os.environ.get("RTVOS_SYSTEM_TESTS") == "1" or os.environ.get("RTVOS_PACKAGING_TESTS") == "1"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_package_list_covers_every_subpackage() -> None:
    """`[tool.setuptools] packages` is an explicit list (the package-dir mapping needs one): a new subpackage
    left out of it would be missing from the wheel while the editable install still finds it."""
    tool = _pyproject()["tool"]["setuptools"]
    listed, mapping = set(tool["packages"]), tool["package-dir"]
    homes = {"rtvos": ROOT / "rtvos", **{name: ROOT / folder for name, folder in mapping.items()}}
    found = set()
    for name, home in homes.items():
        for init in home.rglob("__init__.py"):
            rel = init.parent.relative_to(home)
            sub = ".".join((name, *rel.parts))
            if not any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                found.add(sub)
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed but not a package folder: {sorted(listed - found)}"


@pytest.mark.timeout(900)
@pytest.mark.skipif(not _WANTED, reason="builds a wheel into a throwaway venv (network); set RTVOS_PACKAGING_TESTS=1 or run in CI")
def test_wheel_in_throwaway_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)], check=True,
                   timeout=600)
    (wheel,) = wheels.glob("rtvos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"rtvos", wheel.name.split("-py")[0] + ".dist-info"}, sorted(tops)
    for sub in ("apps/cli.py", "training/distill.py", "engines/build.py", "plugins/deform_conv_plugin.py", "__main__.py"):
        assert f"rtvos/{sub}" in names, sub

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True, env=env, timeout=300)
    # What a user of supervision/ultralytics has: opencv-python (not headless) next to rtvos.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "opencv-python", "supervision"], check=True, env=env, timeout=600)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(py), *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    r = run("-c", "import cv2, rtvos, supervision; print(cv2.__version__); print(rtvos.__file__)")
    assert r.returncode == 0, r.stderr
    assert str(venv) in r.stdout.splitlines()[-1], f"rtvos imported from outside the venv: {r.stdout}"
    r = run("-m", "rtvos", "--version")
    assert r.returncode == 0 and r.stdout.strip() == "rtvos 0.1.0", (r.stdout, r.stderr)
    r = run("-c", "import apps")
    assert r.returncode != 0, "the wheel must not install a top-level `apps` package"
