"""Every command and Python example in README.md runs as shown."""

from __future__ import annotations

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


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_example_runs(code: str):
    exec(compile(code, "README.md", "exec"), {})


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
