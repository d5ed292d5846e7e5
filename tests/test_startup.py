"""What each command imports before it does anything (start-up time is measured in
benchmarks/startup.py; here only which modules load, which cannot flake)."""

from __future__ import annotations

import json
import subprocess
import sys

from cnnzoo import choices

HEAVY = ("torch", "torchvision", "matplotlib", "onnxruntime", "sklearn", "numpy")


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_help_list_and_every_command_help_import_no_torch():
    # One process for all: each command is checked before the next runs, so the first one that
    # imports something heavy is named.
    code = f"""
import contextlib, io, json, sys
from cnnzoo.cli import build_parser, main
commands = list(build_parser()._subparsers._group_actions[0].choices)
loaded = {{}}
first = [["--help"], ["--version"], ["list"], ["list", "--json"], ["list", "--family", "resnet"]]
for argv in first + [[c, "--help"] for c in commands]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    loaded[" ".join(argv)] = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps({{"commands": commands, "loaded": loaded}}))
"""
    result = _run(code)
    assert {"list", "summary", "train", "compare", "bench"} <= set(result["commands"])
    assert len(result["loaded"]) == 5 + len(result["commands"])
    assert {k: v for k, v in result["loaded"].items() if v} == {}


def test_summary_imports_torch_but_not_the_compiler_stack():
    # torch's meta kernels for conv, pooling, linear, add and cat import sympy and
    # torch._dynamo (4+ s); the analyzer shapes those itself (analysis/trace.py).
    code = """
import contextlib, io, json, sys
from cnnzoo.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    for model in ("lenet5", "resnet18", "googlenet", "densenet121", "efficientnet_b0"):
        assert main(["summary", model, "--json"]) == 0
heavy = ("torchvision", "torch._dynamo", "sympy", "matplotlib", "onnxruntime", "sklearn")
loaded = [m for m in heavy if m in sys.modules]
print(json.dumps({"torch": "torch" in sys.modules, "heavy": loaded}))
"""
    assert _run(code) == {"torch": True, "heavy": []}


def test_the_names_the_parser_lists_are_the_ones_implemented():
    import torch

    from cnnzoo import inference
    from cnnzoo.data import transforms
    from cnnzoo.training import optim

    assert tuple(inference.BUILDERS) == choices.ENGINES
    assert ("auto", *choices.ENGINES) == inference.BACKENDS
    model = torch.nn.Linear(2, 2)
    built = {
        type(optim.build_optimizer(model, name, lr=0.1)).__name__ for name in choices.OPTIMIZERS
    }
    assert built >= {"SGD", "Adagrad", "RMSprop", "Adam", "AdamW"}
    texts = {transforms.describe_augment(name, 32, False, "x") for name in choices.AUGMENTS}
    assert len(texts) == len(choices.AUGMENTS)  # each name does something of its own


def test_shipped_zoo_table_equals_the_registry():
    from cnnzoo import catalog

    assert catalog.zoo_rows() == catalog.registry_rows(), (
        "src/cnnzoo/zoo.json is out of date: run `python -m cnnzoo.catalog` to rewrite it"
    )
    from cnnzoo.models import list_models

    assert [r["name"] for r in catalog.zoo_rows("resnet")] == list_models("resnet")
    assert catalog.zoo_rows("no-such-family") == []
