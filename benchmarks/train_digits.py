"""Training on the built-in digits: final validation accuracy and wall time per seed.

Each run is a fresh `cnnzoo train` process, so the wall time includes start-up (imports, data,
model). Prints a table and writes JSON (machine, versions, threads, load, command) to
benchmarks/results/train_digits[_LABEL].json.

    .venv/bin/python benchmarks/train_digits.py                      # the default job, 3 seeds
    .venv/bin/python benchmarks/train_digits.py --label resnet20 -- --model resnet20 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnzoo.environment import environment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--label", default="default")
    parser.add_argument("train_args", nargs="*", help="extra `cnnzoo train` options after --")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for seed in args.seeds.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "cnnzoo", "train", "--seed", seed, "--out", tmp,
                   "--quiet", *args.train_args]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT)
            wall = time.perf_counter() - start
            final = json.loads((Path(tmp) / "metrics.jsonl").read_text().splitlines()[-1])
            config = json.loads((Path(tmp) / "config.json").read_text())["config"]
        rows.append({"seed": int(seed), "val_acc": final["val_acc"], "wall_s": wall})
        print(f"seed {seed}: final val acc {100 * final['val_acc']:.2f}%  wall {wall:.1f} s",
              flush=True)  # fmt: skip
    summary = {
        "median_val_acc": statistics.median(r["val_acc"] for r in rows),
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
    }
    print(f"median: {100 * summary['median_val_acc']:.2f}% in {summary['median_wall_s']:.1f} s "
          f"({config['model']}, {config['epochs']} epochs)")  # fmt: skip
    result = {
        "label": args.label,
        "rows": rows,
        **summary,
        "config": config,
        **environment(),  # the machine (CPU, cores, threads) and the library versions
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "command": shlex.join(sys.argv),
    }
    out = ROOT / "benchmarks" / "results" / f"train_digits_{args.label}.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
