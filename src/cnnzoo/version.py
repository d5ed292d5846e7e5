"""The installed versions: cnnzoo's own and the libraries its results depend on.

Everything is read from package metadata (``importlib.metadata``), never by importing the
library: ``cnnzoo --version`` answers in a fraction of a second and works even when torch is
broken, which is when someone needs it most.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

# Distribution names to try for each library, first match wins: onnxruntime ships as
# differently named wheels for GPUs and other accelerators, all importing as `onnxruntime`.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "numpy": ("numpy",),
    "matplotlib": ("matplotlib",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
}

# What a source tree run without installing (PYTHONPATH=src) reports: there is no metadata, and
# a made-up number would be worse than one that says so.
UNKNOWN = "0+unknown"


def package_version() -> str:
    """cnnzoo's version as installed (``pyproject.toml``'s ``version`` when it was built)."""
    try:
        return metadata.version("cnnzoo")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def _build_version(dist: metadata.Distribution, name: str) -> str | None:
    """The version the library reports itself, from its ``version.py`` read as text.

    torch and torchvision wheels carry the build (``+cu130``, ``+cpu``) only there: their
    metadata says ``2.14.1`` for every build, and which build it is matters for speed reports.
    """
    try:
        text = Path(str(dist.locate_file(f"{name}/version.py"))).read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^__version__\s*(?::\s*\w+\s*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return found.group(1) if found else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries in ``LIBRARIES`` that are installed, by import name."""
    found = {}
    for name, distributions in LIBRARIES.items():
        for dist_name in distributions:
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                continue
            found[name] = _build_version(dist, name) or dist.version
            break
    return found


def version_text() -> str:
    """What ``cnnzoo --version`` prints: cnnzoo and Python, then one library a line."""
    lines = [f"cnnzoo {package_version()} (Python {platform.python_version()})"]
    lines += [f"{name} {version}" for name, version in library_versions().items()]
    return "\n".join(lines)


__version__ = package_version()
