"""Every command and Python example in README.md runs as shown."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from cnnzoo.cli import main

README = (Path(__file__).parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# The README is one session: its commands run in order, in one folder (a later command may use
# what an earlier one wrote, as a reader's would), with the repository's examples/ beside them.
BLOCKS = [
    [
        line.split("  #")[0].strip()
        for line in block.splitlines()
        if line.startswith(".venv/bin/cnnzoo ")
    ]
    for block in re.findall(r"```bash\n(.*?)```", README, re.S)
]
BLOCKS = [b for b in BLOCKS if b]
EXAMPLES = Path(__file__).parents[1] / "examples"
ERROR_EXAMPLES = re.findall(r"\$ cnnzoo (.*)\n(cnnzoo .*: error: .*)\n", README)


def test_readme_has_examples():
    assert PYTHON_BLOCKS and BLOCKS and ERROR_EXAMPLES


# A comment `name = ...  # (2, 10)` promises that shape; the other comments of the Python blocks
# are checked here by hand, on the block's variables and the lines it printed (in order). A
# comment with no check fails the test, so that a new promise cannot go unchecked.
SHAPE_COMMENT = re.compile(r"^(\w+) = .*#\s*(\([\d, ]+\))\s*$")
PROMISES = {
    "a new head for 5 classes": lambda ns, printed: ns["model"].get_classifier().out_features == 5,
    "Linear(512 → 5), 512": lambda ns, printed: (
        printed[0] == "Linear(in_features=512, out_features=5, bias=True) 512"
    ),
    "... (3, 227, 227) 227-258": lambda ns, printed: (
        printed[1].startswith("Krizhevsky") and printed[1].endswith(" (3, 227, 227) 227-258")
    ),
}


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_example_runs_and_prints_what_it_says(code: str):
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)
    printed = out.getvalue().splitlines()
    for line in code.splitlines():
        if "#" not in line:
            continue
        comment = line.split("#", 1)[1].strip()
        if shape := SHAPE_COMMENT.match(line):
            name, expected = shape.groups()
            assert tuple(namespace[name].shape) == ast.literal_eval(expected), line
        else:
            assert comment in PROMISES, f"README promise without a check: {line!r}"
            assert PROMISES[comment](namespace, printed), (line, printed)
    assert len(printed) == code.count("print("), printed  # nothing printed that is not shown


def test_the_checks_find_the_readmes_promises():
    # Guards the parsing above: the shape comments are recognised, and no check is left over
    # for a comment the README no longer has.
    lines = [line for block in PYTHON_BLOCKS for line in block.splitlines()]
    assert [SHAPE_COMMENT.match(ln).group(1) for ln in lines if SHAPE_COMMENT.match(ln)] == [
        "logits",
        "features",
    ]
    assert all(any(ln.endswith(f"# {promise}") for ln in lines) for promise in PROMISES)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(EXAMPLES)
    return folder


@pytest.mark.parametrize("commands", BLOCKS, ids=lambda b: b[0].split()[1])
def test_commands_run(commands: list[str], capsys, session, monkeypatch):
    monkeypatch.chdir(session)  # what a command writes (a training run) lands here
    for command in commands:
        argv = shlex.split(command)[1:]
        assert main(argv) == 0, command
        assert capsys.readouterr().out or "--quiet" in argv, command


@pytest.mark.parametrize(("command", "message"), ERROR_EXAMPLES)
def test_error_example_is_what_the_cli_prints(command: str, message: str, capsys):
    assert main(shlex.split(command)) == 2
    assert capsys.readouterr().err.strip() == message
