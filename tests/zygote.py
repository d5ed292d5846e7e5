"""Start many short `cnnzoo` processes cheaply: import once, then fork one child per run.

A fresh `python -m cnnzoo train` spends seconds importing torch, scikit-learn and matplotlib
before it trains a step; the kill-and-resume tests start a dozen. This script imports them once
and forks a child per run: each child is a real process of its own (it can be SIGKILLed, it
gets its own signals) that runs `cnnzoo` as the program would (``cli.main()`` with
``sys.argv``). The parent never runs a torch operation, so no thread pool is forked half-way.

Protocol, one JSON object per line on stdin: ``{"runs": [{"argv": [...], "env": {...},
"log": PATH}, ...]}`` starts the runs together (the ranks of a distributed run) and answers
``{"pids": [...]}`` at once, then ``{"codes": [...]}`` when all have ended (negative: killed by
that signal, as ``subprocess`` says). A run with ``"elastic": {"nproc": N, "max_restarts": R}``
is torchrun's: the child runs torch's elastic agent (``elastic_launch``, what ``torchrun
--standalone --nproc-per-node N --max-restarts R`` runs) with workers forked from it instead of
started as fresh interpreters.
"""

from __future__ import annotations

import json
import os
import sys

import sklearn.datasets  # noqa: F401  (the built-in digits)
import torch.distributed  # noqa: F401

import cnnzoo.plots
import cnnzoo.training.trainer  # noqa: F401
from cnnzoo.cli import main


def _child(run: dict) -> None:
    for key, value in run.get("env", {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    fd = os.open(run["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["cnnzoo", *run["argv"]]
    try:
        code = _elastic(run["argv"], **run["elastic"]) if "elastic" in run else main()
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _worker(argv: list[str]) -> None:
    sys.argv = ["cnnzoo", *argv]
    code = main()
    if code:
        raise SystemExit(code)


def _elastic(argv: list[str], nproc: int, max_restarts: int) -> int:
    import uuid

    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
        monitor_interval=0.1, start_method="fork",
    )  # fmt: skip
    elastic_launch(config, _worker)(argv)  # raises ChildFailedError when it gives up
    return 0


def _code(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve() -> None:
    for line in sys.stdin:
        runs = json.loads(line)["runs"]
        pids = []
        for run in runs:
            pid = os.fork()
            if pid == 0:
                _child(run)
            pids.append(pid)
        print(json.dumps({"pids": pids}), flush=True)
        print(json.dumps({"codes": [_code(os.waitpid(p, 0)[1]) for p in pids]}), flush=True)


if __name__ == "__main__":
    serve()
