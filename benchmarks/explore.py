"""`cnnzoo explore`'s server time on a ResNet-50 at 224 px (random weights with ImageNet's
preprocessing: the work does not depend on the values). Targets (docs/explore.md): the first
overview of a new image (its forward pass with every layer kept, and the thumbnails) under 3 s
on 2 cores; a click on a layer, a channel map or a neuron under 300 ms. Each request goes
through the app (Starlette's TestClient: no network, the guard included); the times are
medians over repeats, each repeat on a new image for the overview.

    .venv/bin/python benchmarks/explore.py --repeats 3

A model whose activations do not fit the cache (docs/explore.md, "When a model does not fit"):

    .venv/bin/python benchmarks/explore.py --model efficientnet_b7 --image-size 600 --repeats 1

Prints a table, the process' peak RSS and the cache's use, and writes
benchmarks/results/explore.json (explore_<model>_<size>.json for another model or size).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnzoo.explore.app import cookie_name, create_app
from cnnzoo.explore.engine import DEFAULT_CACHE_BYTES, Explorer
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
    parser.add_argument("--image-size", type=int, default=None, help="side (default: the model's)")
    parser.add_argument("--cache-gb", type=float, default=DEFAULT_CACHE_BYTES / 1024**3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    entry = model_entry(args.model, None, "m", side=args.image_size)
    explorer = Explorer([entry], cache_bytes=int(args.cache_gb * 1024**3))
    client = TestClient(create_app(explorer, "t"), base_url="http://127.0.0.1:8000")
    client.cookies.set(cookie_name(8000), "t")
    rows = explorer.models["m"].rows
    # Convolutions with maps of 8×8 or more (the neuron below is at row 7, column 7).
    convs = [i for i, r in enumerate(rows) if r.type == "Conv2d" and min(r.output_shape[2:]) >= 8]
    # ResNet-50: the last convolution of layer3; another model: the one three quarters in.
    in_layer3 = [i for i in convs if rows[i].name.startswith("layer3")]
    conv = max(in_layer3) if in_layer3 else convs[3 * len(convs) // 4]
    times: dict[str, list[float]] = {k: [] for k in (
        "upload", "first overview (forward + thumbnails)", "layer (64 channels)",
        "one channel map", f"neuron ({rows[conv].name})", "receptive field", "top-5",
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
            (f"neuron ({rows[conv].name})", "/api/neuron", at),
            ("receptive field", "/api/receptive_field", at),
            ("top-5", "/api/topk", q),
        ]
        for name, path, params in steps:
            times[name].append(timed(client.get, path, params=params))
    key = q["image"]
    acts = explorer.activations("m", key)
    result = {
        "model": args.model,
        "input": list(explorer.models["m"].summary.input_size),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "cache_bytes_per_image": acts.nbytes,
        "fits_the_cache": acts.complete,
        "activations_bytes": entry.kept_bytes,
        "cache_bytes": explorer.cache_bytes,
        "cache_bytes_used": explorer.cached_bytes(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "notes": explorer.notes,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    for name, value in result["median_s"].items():
        print(f"{name:40s} {1000 * value:9.1f} ms")
    print(
        f"activations of one image: {entry.kept_bytes / 1e6:.0f} MB; they fit the "
        f"{explorer.cache_bytes / 1e9:.2f} GB cache: {acts.complete}; kept per image: "
        f"{acts.nbytes / 1e6:.0f} MB; cache in use: {explorer.cached_bytes() / 1e6:.0f} MB"
    )
    print(f"peak RSS of this process: {result['peak_rss_bytes'] / 1e9:.2f} GB")
    for note in explorer.notes:
        print(f"note: {note}")
    default = args.model == "resnet50" and args.image_size is None
    side = result["input"][-1]
    name = "explore.json" if default else f"explore_{args.model}_{side}.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
