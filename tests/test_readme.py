"""Every command and Python example in README.md runs as shown."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cnnzoo.cli import main

README = (Path(__file__).parents[1] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
COMMANDS = [
    line.split("#")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, re.S)
    for line in block.splitlines()
    if line.startswith(".venv/bin/cnnzoo ")
]
ERROR_EXAMPLES = re.findall(r"\$ cnnzoo (.*)\n(cnnzoo .*: error: .*)\n", README)


def test_readme_has_examples():
    assert PYTHON_BLOCKS and COMMANDS and ERROR_EXAMPLES


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_example_runs(code: str):
    exec(compile(code, "README.md", "exec"), {})


@pytest.mark.parametrize("command", COMMANDS)
def test_command_runs(command: str, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what a command writes (a training run) lands here
    argv = shlex.split(command)[1:]
    assert main(argv) == 0
    assert capsys.readouterr().out


@pytest.mark.parametrize(("command", "message"), ERROR_EXAMPLES)
def test_error_example_is_what_the_cli_prints(command: str, message: str, capsys):
    assert main(shlex.split(command)) == 2
    assert capsys.readouterr().err.strip() == message
