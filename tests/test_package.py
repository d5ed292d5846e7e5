"""The package as users get it: the sdist and wheel built from the tracked files, the wheel
installed without dependencies into a fresh folder and run from there with the repository's
``src/`` off the path; and the version, read from package metadata."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from cnnzoo import version

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "cnnzoo"


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the package depends on tomli there, as training/config.py does
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tracked(*paths: str) -> list[str]:
    """Files git would put in a fresh clone (tracked, or new and not ignored), repo-relative."""
    # Fail, never skip: without the list a missing data file would pass unseen.
    assert shutil.which("git") and (ROOT / ".git").exists(), (
        "these tests read which files a clone holds from git: run them in a git checkout"
    )
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *paths],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # --cached lists files deleted but not yet committed; a clone would not hold them.
    return sorted(p for p in out.splitlines() if (ROOT / p).is_file())


def _data_files() -> list[str]:
    """Every non-Python file under src/cnnzoo, relative to the package: what the code opens."""
    prefix = "src/cnnzoo/"
    return [
        p[len(prefix) :]
        for p in _tracked(prefix)
        if not p.endswith(".py") and "__pycache__" not in p
    ]


def test_package_data_globs_cover_every_data_file():
    globs = _pyproject()["tool"]["setuptools"]["package-data"]["cnnzoo"]
    missed = [f for f in _data_files() if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missed, f"add globs for {missed} to [tool.setuptools.package-data] in pyproject"


def test_license_matches_pyproject():
    project = _pyproject()["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "the cnnzoo authors" in text and "Neither the name of the copyright holder" in text


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist from a copy of the clone's files, then the wheel from the unpacked sdist (as
    `python -m build` does, so a file the sdist lacks is missing from the wheel too), then the
    wheel installed with ``pip install --no-deps --target``."""
    tmp = tmp_path_factory.mktemp("package")
    clone = tmp / "clone"
    for rel in _tracked():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, clone / rel)
    dist = tmp / "dist"
    dist.mkdir()
    hook = "import sys; from setuptools import build_meta as b; print(b.build_{}(sys.argv[1]))"
    # The build backend is called directly, without an isolated environment: the venv's
    # setuptools is the one pyproject asks for, and nothing is downloaded.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def build(kind: str, cwd: Path) -> Path:
        out = subprocess.run(
            [sys.executable, "-c", hook.format(kind), str(dist)],
            cwd=cwd, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return dist / out.stdout.strip().splitlines()[-1]

    sdist = build("sdist", clone)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = build("wheel", unpacked)
    site = tmp / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(site), str(wheel)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return {"sdist": sdist, "wheel": wheel, "site": site, "tmp": tmp}


@pytest.mark.slow
def test_sdist_holds_the_sources_and_license(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "pyproject.toml", "README.md"} <= names
    sources = _tracked("src/")
    missing = [p for p in sources if p not in names and "__pycache__" not in p]
    assert not missing, f"the sdist lacks {missing}"


@pytest.mark.slow
def test_wheel_holds_every_data_file_and_license(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        fields = whl.read(meta).decode()
    missing = [f for f in _data_files() if f"cnnzoo/{f}" not in names]
    assert not missing, f"the wheel lacks {missing}: add them to package-data in pyproject"
    modules = [p[len("src/") :] for p in _tracked("src/cnnzoo/") if p.endswith(".py")]
    assert not [m for m in modules if m not in names], "the wheel lacks modules"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: BSD-3-Clause" in fields
    assert re.search(r"^Version: " + re.escape(_pyproject()["project"]["version"]), fields, re.M)


@pytest.mark.slow
def test_installed_wheel_runs_without_the_repository(built):
    """`cnnzoo list`, `summary lenet5`, the ImageNet reference and every data file, from the
    installed wheel alone; the console script's --version from its own metadata."""
    site, tmp = built["site"], built["tmp"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    script = f"""
import json, sys
from pathlib import Path
import cnnzoo
from cnnzoo.cli import main
from cnnzoo.compare import imagenet_rows
print(json.dumps({{"file": cnnzoo.__file__, "version": cnnzoo.__version__}}))
assert main(["list", "--json"]) == 0
assert main(["summary", "lenet5", "--json"]) == 0
print(json.dumps({{"reference": imagenet_rows()}}))
root = Path(cnnzoo.__file__).parent
print(json.dumps({{"files": {{f: (root / f).read_bytes().hex() for f in {_data_files()!r}}}}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    where = json.loads(lines[0])
    assert Path(where["file"]).is_relative_to(site), where["file"]
    assert where["version"] == _pyproject()["project"]["version"]
    text = "\n".join(lines)
    assert '"name": "lenet5"' in text and '"resnet50"' in text  # list
    assert "61706" in text  # LeNet-5's parameters, from the summary (docs/models.md)
    reference = json.loads(next(line for line in lines if line.startswith('{"reference"')))
    shipped = json.loads((PACKAGE / "compare" / "imagenet_reference.json").read_text())
    assert reference["reference"] == shipped["models"] and len(shipped["models"]) > 10
    files = json.loads(lines[-1])["files"]
    for rel, data in files.items():
        assert bytes.fromhex(data) == (PACKAGE / rel).read_bytes(), rel

    # The console script pip wrote, run by its path: the entry point and the wheel's metadata.
    script_path = site / "bin" / "cnnzoo"
    out = subprocess.run(
        [str(script_path), "--version"], cwd=tmp, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"cnnzoo {_pyproject()['project']['version']} (Python ")


# --- the version -----------------------------------------------------------------------------


def test_version_is_the_metadata_and_pyproject_version():
    import cnnzoo

    assert cnnzoo.__version__ == metadata.version("cnnzoo") == version.package_version()
    assert cnnzoo.__version__ == _pyproject()["project"]["version"]


def test_version_command_names_the_libraries_without_importing_torch():
    code = (
        "import sys; from cnnzoo.cli import main; code = main(['--version']); "
        "assert 'torch' not in sys.modules, 'imported torch'; sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import platform

    import onnxruntime
    import torch
    import torchvision

    lines = out.stdout.splitlines()
    assert lines[0] == f"cnnzoo {metadata.version('cnnzoo')} (Python {platform.python_version()})"
    # Against the libraries' own idea of their version, not the metadata the code reads.
    assert f"torch {torch.__version__}" in lines
    assert f"torchvision {torchvision.__version__}" in lines
    assert f"onnxruntime {onnxruntime.__version__}" in lines
    has_openvino = any(d.metadata["Name"] == "openvino" for d in metadata.distributions())
    assert any(line.startswith("openvino ") for line in lines) == has_openvino


def test_version_flag_among_other_arguments(capsys):
    from cnnzoo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version", "list"])  # argparse's path: the version, nothing listed
    assert exit_.value.code == 0
    assert capsys.readouterr().out == version.version_text() + "\n"


def test_library_versions_take_the_build_and_the_first_installed_distribution(
    monkeypatch, tmp_path
):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text("__version__ = '2.0.1+cpu'\ncuda = None\n")

    class Dist:
        def __init__(self, version: str) -> None:
            self.version = version

        def locate_file(self, path: str) -> Path:
            return tmp_path / path

    installed = {"torch": Dist("2.0.1"), "onnxruntime-gpu": Dist("1.9"), "openvino": Dist("25")}

    def distribution(name: str) -> Dist:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    def no_version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "distribution", distribution)
    monkeypatch.setattr(version.metadata, "version", no_version)
    # torch's build from its version.py; onnxruntime from the GPU wheel's metadata.
    assert version.library_versions() == {
        "torch": "2.0.1+cpu", "onnxruntime": "1.9", "openvino": "25"
    }  # fmt: skip
    assert version.package_version() == version.UNKNOWN  # a source tree never installed
    assert version.version_text().splitlines()[1:] == [
        "torch 2.0.1+cpu", "onnxruntime 1.9", "openvino 25"
    ]  # fmt: skip


# --- citing -----------------------------------------------------------------------------------


def _bibtex_entries() -> list[str]:
    text = (ROOT / "docs" / "models.md").read_text()
    return re.findall(r"```bibtex\n(.*?)```", text, re.S)


def test_every_registered_paper_has_a_bibtex_entry():
    from cnnzoo.models import get_spec, list_models

    entries = "\n".join(_bibtex_entries())
    eprints = set(re.findall(r"eprint\s*=\s*\{([^}]*)\}", entries))
    titles = {
        re.sub(r"\s+", " ", t.replace("{", "").replace("}", "")).strip().lower()
        for t in re.findall(r"\btitle\s*=\s*\{((?:[^{}]|\{[^{}]*\})*)\}", entries)
    }
    for name in list_models():
        paper = get_spec(name).paper
        arxiv = re.search(r"arXiv:(\d{4}\.\d{4,5})", paper)
        if arxiv:
            assert arxiv.group(1) in eprints, f"{name}: no entry with eprint {arxiv.group(1)}"
        else:  # the two papers without an arXiv id, found by title
            title = re.sub(r"^.*?\d{4}, | \(.*\)$", "", paper).lower()
            assert title in titles, f"{name}: no entry titled {title!r}"


def test_bibtex_entries_are_well_formed():
    entries = _bibtex_entries()
    keys = []
    for block in entries:
        for entry in re.split(r"\n(?=@)", block.strip()):
            assert entry.count("{") == entry.count("}"), entry[:60]
            head = re.match(r"@(article|inproceedings|misc)\{(\w+),\n", entry)
            assert head, entry[:60]
            keys.append(head.group(2))
            for field in ("author", "title", "year"):
                assert re.search(rf"^\s+{field}\s+=", entry, re.M), (head.group(2), field)
    assert len(keys) == len(set(keys)) == 11


def test_citation_cff_names_the_package_and_its_version():
    text = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)
    assert re.search(r"^title: .*cnnzoo", text, re.M)
    version_line = re.search(r'^version: "?([^"\n]+)"?$', text, re.M)
    assert version_line and version_line.group(1) == _pyproject()["project"]["version"]
    assert re.search(r"^license: BSD-3-Clause$", text, re.M)
