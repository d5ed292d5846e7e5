"""`cnnzoo visualize` of a ResNet-50 at 224 px on one image, every stage and Grad-CAM: wall time
of a fresh process (imports, loading the weights, the pictures and the page included), median of
interleaved repeats. Target: under 10 s on 2 cores. Random weights with ImageNet's
preprocessing stand in for trained ones (the work does not depend on the values).

    .venv/bin/python benchmarks/visualize_speed.py --repeats 3

Prints a table and writes benchmarks/results/visualize_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save

from cnnzoo import create_model
from cnnzoo.data.preprocessing import Preprocessing

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "top-3 classes (the default)": [],
    "one class (--class 0)": ["--class", "0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = create_model("resnet50")
        pre = Preprocessing(
            (3, 224, 224), 256, 224, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
            "RGB", None, "benchmark",
        )  # fmt: skip
        meta = {"model": "resnet50", "num_classes": "1000", **pre.to_metadata()}
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        (folder / "resnet50.safetensors").write_bytes(save(state, metadata=meta))
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8)).save(folder / "a.jpg")
        for _ in range(args.repeats):
            for label, extra in RUNS.items():  # interleaved: a load spike hits both alike
                cmd = [sys.executable, "-m", "cnnzoo", "visualize", "--weights",
                       str(folder / "resnet50.safetensors"), str(folder / "a.jpg"), "--stages",
                       "--cam", "gradcam", *extra, "--out", str(folder / "out")]  # fmt: skip
                start = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
                times[label].append(time.perf_counter() - start)
    rows = {label: statistics.median(t) for label, t in times.items()}
    for label, seconds in rows.items():
        print(f"{label:<30} {seconds:6.2f} s (median of {args.repeats}; all: "
              f"{', '.join(f'{t:.2f}' for t in times[label])})")  # fmt: skip
    result = {
        "median_s": rows,
        "all_s": times,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    out = ROOT / "benchmarks" / "results" / "visualize_speed.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
