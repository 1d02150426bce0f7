"""Packaging: the wheel installs everything under the `rtvos` namespace and coexists with opencv-python users.

The throwaway-venv tests need the network (PyPI) and a minute or more, so they run only in CI
(RTVOS_SYSTEM_TESTS=1) or on request (RTVOS_PACKAGING_TESTS=1).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
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
    for sub in ("apps/cli.py", "training/distill.py", "engines/build.py", "plugins/deform_conv_plugin.py", "__main__.py",
                "static/live.html", "static/streams.html"):
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


def test_library_never_imports_torchvision() -> None:
    """torchvision is a dev (test reference) dependency only: nothing that installs may import it."""
    offenders = []
    for folder in ("rtvos", "apps", "training", "engines", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "torchvision" or n.startswith("torchvision.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
    deps = " ".join(_pyproject()["project"]["dependencies"])
    assert "torchvision" not in deps and "torchvision" in " ".join(_pyproject()["project"]["optional-dependencies"]["dev"])


def readme_block(marker: str) -> str:
    """The fenced bash block after `<!-- marker -->` in README.md (as .ci/run reads its ci:install block)."""
    m = re.search(rf"^<!-- {re.escape(marker)} -->\n```bash\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"),
                  re.M | re.S)
    assert m, f"README.md lacks its <!-- {marker} --> block"
    return m.group(1)


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _WANTED, reason="installs CPU torch into a throwaway venv (network); set RTVOS_PACKAGING_TESTS=1 or run in CI")
def test_readme_cpu_only_install_runs_segment(tmp_path: Path) -> None:
    """Issue #20.9: the README's CPU-only install (CPU torch, no torchvision, no CUDA wheels), run verbatim in a
    fresh venv on a copy of the repository, builds and installs the wheel and segments the shipped sample."""
    block = readme_block("test:cpu-install")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "dist", "__pycache__",
                                                            ".pytest_cache", ".mypy_cache", ".ruff_cache", "rtvos_out"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)  # no system site-packages
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=src, env=env, capture_output=True, text=True,
                       timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = src / "rtvos_out" / "sample"
    assert len(list(out.glob("*.png"))) == 109 and (out / "overlay.mp4").stat().st_size > 0, sorted(out.iterdir())

    py = str(bindir / "python")
    probe = ("import importlib.metadata as md, importlib.util as u, torch, rtvos\n"
             "names = sorted(d.metadata['Name'].lower() for d in md.distributions())\n"
             "print(torch.__version__, torch.version.cuda, u.find_spec('torchvision') is not None, rtvos.__file__)\n"
             "print(' '.join(n for n in names if n.startswith(('nvidia', 'triton', 'cuda'))))")
    r = subprocess.run([py, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    version, cuda, has_torchvision, where = r.stdout.splitlines()[0].split()
    assert cuda == "None" and has_torchvision == "False", r.stdout
    assert str(venv) in where, f"rtvos imported from outside the venv (not the built wheel): {where}"
    assert r.stdout.splitlines()[1:] in ([], [""]), f"CUDA packages in a CPU install: {r.stdout}"
    size = _du_mb(venv)
    print(f"CPU-only venv: torch {version}, {size:.0f} MiB")
    assert size < 2048, f"CPU-only venv is {size:.0f} MiB"


def test_readme_links_point_into_the_repository() -> None:
    """Every relative link or image in the README names a file in the repository (no dangling references)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert targets, "no relative links found: the pattern is wrong"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing
    anchors = [t[1:] for t in re.findall(r"\]\((#[^)]+)\)", text)]
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}
    assert set(anchors) <= headings, set(anchors) - headings
