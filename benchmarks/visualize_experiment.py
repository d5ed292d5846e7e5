"""Do the pictures of `cnnzoo visualize` mean something? The experiment of docs/visualize.md.

1. The synthetic task (`cnnzoo.visualize.synthetic`): a small CNN trained on squares vs crosses
   at random places has its class activation map peak inside the shape's bounding box; randomly
   initialised copies (Adebayo et al. 2018) do not. Every method, held-out images.
2. LeNet-5 trained on the built-in digits: its first-layer filters against their
   initialisation (relative change, correlation of neighbouring weights), and the pages of
   `cnnzoo visualize` for one example digit.

Writes the pictures to docs/images/visualize/ and the numbers to
benchmarks/results/visualize_experiment.json.

    .venv/bin/python benchmarks/visualize_experiment.py [shapes] [lenet5]   # both by default

Each part's numbers replace that part's entry in the JSON, which is written after each part.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnzoo import create_model
from cnnzoo.data import load_dataset
from cnnzoo.visualize import class_activation_map, filters
from cnnzoo.visualize.draw import draw_filters
from cnnzoo.visualize.report import visualize_files
from cnnzoo.visualize.synthetic import (
    CAM_LAYER,
    Shapes,
    TinyCNN,
    accuracy,
    peak_in_box,
    shapes_dataset,
    train_tiny,
)

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images" / "visualize"
RANDOM_SEEDS = (1, 2, 3, 4, 5)
STEPS = 600  # LeNet-5 on digits: ≈ 27 epochs of 1,437 images at batch 64


def neighbour_correlation(w: torch.Tensor) -> float:
    """Correlation of horizontally and vertically adjacent weights of (K, 1, k, k) filters."""
    w = w[:, 0]
    a = torch.cat([w[:, :, :-1].flatten(), w[:, :-1, :].flatten()])
    b = torch.cat([w[:, :, 1:].flatten(), w[:, 1:, :].flatten()])
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def shapes_experiment() -> dict:
    start = time.perf_counter()
    model = train_tiny(shapes_dataset(1200, seed=0), epochs=4)
    seconds = time.perf_counter() - start
    test = shapes_dataset(300, seed=1)
    keep = test.labels < 2
    test = Shapes(test.images[keep], test.labels[keep], test.boxes[keep])
    targets = test.labels.tolist()
    rows = {"accuracy": accuracy(model, test), "train_s": seconds, "images": len(targets)}
    maps = {}
    for method in ("gradcam", "gradcam++", "scorecam"):
        cam = class_activation_map(model, test.images, targets, layer=CAM_LAYER, method=method)
        maps[method] = cam
        rows[f"trained_{method}"] = peak_in_box(cam, test.boxes).float().mean().item()
        rates = []
        for seed in RANDOM_SEEDS:
            torch.manual_seed(seed)
            cam = class_activation_map(
                TinyCNN().eval(), test.images, targets, layer=CAM_LAYER, method=method
            )
            if seed == RANDOM_SEEDS[0]:
                maps[f"random_{method}"] = cam
            rates.append(peak_in_box(cam, test.boxes).float().mean().item())
        rows[f"random_{method}"] = rates
    _draw_shapes(test, maps)
    return rows


def _draw_shapes(test: Shapes, maps: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    count = 6
    fig = Figure(figsize=(2 * count, 6.4))
    FigureCanvasAgg(fig)
    rows = [("image", None), ("trained: Grad-CAM", "gradcam"), ("random copy", "random_gradcam")]
    for r, (label, key) in enumerate(rows):
        for i in range(count):
            ax = fig.add_subplot(3, count, r * count + i + 1)
            ax.imshow(test.images[i, 0].numpy(), cmap="gray")
            if key is not None:
                cam = maps[key][i]
                ax.imshow(cam.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                peak = int(cam.flatten().argmax())
                ax.plot(peak % cam.shape[1], peak // cam.shape[1], "w+", markersize=12)
            top, left, bottom, right = test.boxes[i].tolist()
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                   fill=False, edgecolor="lime", linewidth=1.2))  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=10)
            if r == 0:
                ax.set_title(("square", "cross")[int(test.labels[i])], fontsize=10)
    fig.suptitle("Grad-CAM on held-out images: green the shape's box, + the map's peak")
    fig.savefig(IMAGES / "shapes_gradcam.png", dpi=90, bbox_inches="tight")


def lenet_experiment() -> dict:
    data = load_dataset("digits", image_size=32)
    x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    y = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    xv = torch.stack([data.val[i][0] for i in range(len(data.val))])
    yv = torch.tensor([data.val[i][1] for i in range(len(data.val))])
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1)
    before = filters(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(STEPS):
        batch = torch.randint(0, len(x), (64,), generator=gen)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        val_acc = (model(xv).argmax(1) == yv).float().mean().item()
    after = filters(model)
    (IMAGES / "lenet5_filters_init.png").write_bytes(draw_filters(before, "c1 at initialisation"))
    (IMAGES / "lenet5_filters_trained.png").write_bytes(draw_filters(after, "c1 trained"))
    model.pretrained_cfg = data.preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        result = visualize_files(model, [ROOT / "examples/images/seven.png"], tmp, topk=1)
        for name in ("maps_s2.png", "maps_s4.png"):
            shutil.copy(Path(tmp) / "seven" / name, IMAGES / f"lenet5_seven_{name}")
        cam = next(iter(result.images[0].cams.values()))
        shutil.copy(cam, IMAGES / "lenet5_seven_cam.png")
    return {
        "steps": STEPS,
        "batch_size": 64,
        "train_s": seconds,
        "val_acc": val_acc,
        "relative_change": ((after - before).norm() / before.norm()).item(),
        "neighbour_correlation_init": neighbour_correlation(before),
        "neighbour_correlation_trained": neighbour_correlation(after),
    }


def main() -> None:
    parts = sys.argv[1:] or ["shapes", "lenet5"]
    IMAGES.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # these models are small: one thread is faster on a busy machine
    out = ROOT / "benchmarks" / "results" / "visualize_experiment.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    for part in parts:
        numbers = {"shapes": shapes_experiment, "lenet5": lenet_experiment}[part]()
        print(json.dumps(numbers, indent=1), flush=True)
        result[part] = numbers
        result[f"{part}_run"] = {
            "machine": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
        out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
