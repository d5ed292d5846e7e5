"""Start-up time of the command line: each command timed as a whole process, from outside.

Commands are interleaved (one round runs each once, in order; ``--repeats`` rounds) and the
median per command is reported beside ``python -c "import torch"``, the floor of every command
that needs torch. Targets (docs/benchmarks.md): ``cnnzoo --help``, ``cnnzoo list`` and
``cnnzoo <command> --help`` under 0.5 s; ``cnnzoo summary lenet5`` within 0.5 s of importing
torch. Run on a quiet machine:

    .venv/bin/python benchmarks/startup.py --repeats 5

Results: a table on stdout and ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CNNZOO = [sys.executable, "-m", "cnnzoo"]
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "cnnzoo --help": [*CNNZOO, "--help"],
    "cnnzoo list": [*CNNZOO, "list"],
    "cnnzoo train --help": [*CNNZOO, "train", "--help"],
    "cnnzoo compare --help": [*CNNZOO, "compare", "--help"],
    "cnnzoo summary lenet5": [*CNNZOO, "summary", "lenet5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # one untimed run each: the file cache warm for all
        subprocess.run(argv, check=True, capture_output=True)
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    torch_floor = medians["python -c 'import torch'"]
    print(f"{'command':28} {'median s':>9} {'vs import torch':>16}")
    for name, m in medians.items():
        print(f"{name:28} {m:9.2f} {m - torch_floor:+15.2f}s")
    out = HERE / "results" / "startup.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": medians,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
