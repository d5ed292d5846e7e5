"""`cnnzoo explore`'s server time on a ResNet-50 at 224 px (random weights with ImageNet's
preprocessing: the work does not depend on the values). Targets (docs/explore.md): the first
overview of a new image (its forward pass with every layer kept, and the thumbnails) under 3 s
on 2 cores; a click on a layer, a channel map or a neuron under 300 ms. Each request goes
through the app (Starlette's TestClient: no network, the guard included); the times are
medians over repeats, each repeat on a new image for the overview.

    .venv/bin/python benchmarks/explore.py --repeats 3

Prints a table and writes benchmarks/results/explore.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnzoo.explore.app import cookie_name, create_app
from cnnzoo.explore.engine import Explorer
from cnnzoo.explore.session import model_entry

ROOT = Path(__file__).resolve().parents[1]


def image(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(call, *args, **kwargs) -> float:
    start = time.perf_counter()
    answer = call(*args, **kwargs)
    assert answer.status_code in (200, 201), answer.text
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    explorer = Explorer([model_entry(args.model, None, "m")])
    client = TestClient(create_app(explorer, "t"), base_url="http://127.0.0.1:8000")
    client.cookies.set(cookie_name(8000), "t")
    rows = explorer.models["m"].rows
    conv = max(i for i, r in enumerate(rows) if r.type == "Conv2d" and r.name.startswith("layer3"))
    times: dict[str, list[float]] = {k: [] for k in (
        "upload", "first overview (forward + thumbnails)", "layer (64 channels)",
        "one channel map", "neuron (last conv of layer3)", "receptive field", "top-5",
    )}  # fmt: skip
    for seed in range(args.repeats):
        data = image(seed)
        times["upload"].append(timed(client.post, "/api/images", content=data))
        q = {"model": "m", "image": next(reversed(explorer.images))}
        at = {**q, "layer": conv, "channel": 5, "y": 7, "x": 7}
        steps = [
            ("first overview (forward + thumbnails)", "/api/graph", q),
            ("layer (64 channels)", "/api/layer", {**q, "layer": conv}),
            ("one channel map", "/api/channel.png", {**q, "layer": conv}),
            ("neuron (last conv of layer3)", "/api/neuron", at),
            ("receptive field", "/api/receptive_field", at),
            ("top-5", "/api/topk", q),
        ]
        for name, path, params in steps:
            times[name].append(timed(client.get, path, params=params))
    key = q["image"]
    result = {
        "model": args.model,
        "input": list(explorer.models["m"].summary.input_size),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "cache_bytes_per_image": explorer.activations("m", key).nbytes,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    for name, value in result["median_s"].items():
        print(f"{name:40s} {1000 * value:9.1f} ms")
    print(f"activations kept per image: {result['cache_bytes_per_image'] / 1e6:.0f} MB")
    out = ROOT / "benchmarks" / "results" / "explore.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
