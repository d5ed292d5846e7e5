"""The direction of imports (docs/architecture.md) and the leaf modules every layer shares:
the parity check, ONNX Runtime sessions, the optional-import guard and the environment record.

Imports are read from the source with ``ast`` (also those inside functions), so a lazy import
that points the wrong way is caught too.
"""

from __future__ import annotations

import ast
import os
import platform
import sys
from pathlib import Path

import numpy
import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.errors import ExportError

SRC = Path(cnnzoo.__file__).parent


def _cnnzoo_imports(module: str) -> set[str]:
    """Every cnnzoo module that ``module`` (e.g. ``"registry"``) imports, anywhere in the file."""
    tree = ast.parse((SRC / f"{module.replace('.', '/')}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name == "cnnzoo" or name.startswith("cnnzoo.")}


def test_the_registry_imports_nothing_of_cnnzoo_but_its_leaves():
    assert _cnnzoo_imports("registry") == {"cnnzoo.checks", "cnnzoo.errors"}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("parity", set()),
        ("extras", {"cnnzoo.errors"}),
        ("onnxrt", {"cnnzoo.checks", "cnnzoo.errors", "cnnzoo.extras"}),
        ("environment", {"cnnzoo.version"}),
    ],
)
def test_the_shared_leaves_import_only_below_them(module, allowed):
    assert _cnnzoo_imports(module) <= allowed


def test_export_and_inference_share_the_leaves_not_each_other():
    for module in ("inference.runner", "inference.backends", "inference"):
        path = f"{module}/__init__" if module == "inference" else module
        imports = _cnnzoo_imports(path)
        assert "cnnzoo.export" not in imports, module
    assert {"cnnzoo.parity", "cnnzoo.onnxrt", "cnnzoo.extras"} <= _cnnzoo_imports("export")


def test_create_model_with_weights_goes_through_the_factory(tmp_path):
    from safetensors.torch import save_file

    from cnnzoo.models import build_model

    model = build_model("lenet5", num_classes=3, in_chans=1)
    path = tmp_path / "lenet5.safetensors"
    save_file(model.state_dict(), path)
    loaded = cnnzoo.create_model("lenet5", weights=path)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    # Arguments are checked before the file is read: a missing file does not mask the mistake.
    with pytest.raises(TypeError, match="unknown keyword argument 'depth'"):
        cnnzoo.create_model("lenet5", weights=tmp_path / "none.safetensors", depth=3)


# --- the optional-import guard ---------------------------------------------------------------


def test_a_missing_optional_module_names_the_extra(monkeypatch):
    from cnnzoo.extras import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ExportError) as info:
        require("onnx", "onnxscript", "onnxruntime", needed_by="Something")
    assert str(info.value) == (
        "Something needs the onnx extra: pip install 'cnnzoo[onnx]' "
        "(missing: onnxscript, onnxruntime)"
    )
    import onnx

    assert require("onnx", needed_by="Something") == [onnx]


def test_the_onnxruntime_backend_without_the_extra_says_what_to_install(monkeypatch):
    from cnnzoo.inference import optimize

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = cnnzoo.create_model("lenet5", num_classes=3, in_chans=1)
    with pytest.raises(ExportError) as info:
        optimize(model, "onnxruntime", example_input=torch.randn(1, 1, 32, 32), threads=1)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("The ONNX Runtime backends (onnxruntime, int8) needs")
    assert str(info.value).endswith("pip install 'cnnzoo[onnx]' (missing: onnxruntime)")


# --- the environment -------------------------------------------------------------------------


def _module_version(name: str) -> str | None:
    """The installed distribution's version, read without importing it: importing openvino
    here would load its telemetry package before cnnzoo turns it off (test_precision checks
    that), and its ``__version__`` carries a build suffix the package metadata does not."""
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_environment_reads_the_machine_and_the_versions():
    import matplotlib
    import onnxruntime

    from cnnzoo.environment import environment

    env = environment(threads=3)
    assert env["machine"]["threads"] == 3 and env["machine"]["cores"] == os.cpu_count()
    assert env["machine"]["cpu"].endswith(f"({platform.machine()})")
    assert environment()["machine"]["threads"] == torch.get_num_threads()
    assert env["versions"] == {
        "cnnzoo": cnnzoo.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "openvino": _module_version("openvino"),  # None where not installed, never left out
    }


def test_bench_and_auto_record_the_same_environment():
    from cnnzoo.bench import run_bench
    from cnnzoo.environment import environment
    from cnnzoo.inference import AUTO_CANDIDATES, auto

    env = environment(threads=1)
    result = run_bench(["lenet5"], ["eager"], [1], threads=1, rounds=1, memory=False)
    assert result.machine == env["machine"] | env["versions"]
    model = cnnzoo.create_model("lenet5")
    key = auto.cache_key(model, "lenet5", torch.randn(1, 1, 32, 32), 1, AUTO_CANDIDATES)
    assert key["machine"] == env["machine"]["cpu"]
    assert {k: key[k] for k in ("torch", "onnxruntime", "cnnzoo")} == {
        k: env["versions"][k] for k in ("torch", "onnxruntime", "cnnzoo")
    }
