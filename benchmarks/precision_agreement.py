"""bf16 and int8 against fp32 on real trained weights: the models of a finished comparison.

For every ``runs/<model>/model.safetensors`` under a ``cnnzoo compare`` folder (the default
comparison trains the eight classic networks on digits), each reduced-precision backend is built
with ``optimize`` (int8 calibrated on 256 training images, as ``compare --precision int8``
does) and compared with the fp32 model on the 360 validation images: top-1 agreement, the
largest |Δlogit|, the validation accuracy of both, and, for the images whose top-1 class changed,
how close fp32's own first two classes were there (a barely trained network has many near-ties,
which any rounding can flip). No timing: this may run on a busy machine.

Then what ``optimize(model, "auto", precision="int8")`` delivers at the model's input size,
batch 8: auto times the int8 and the bf16 engines here and keeps the fastest (int8 allows
bf16, and bf16 is kept when within 5% of int8), so its row names the engine it picked and the
medians it saw (the pick is a timing: it may differ on a busy machine).

Beside them, a diagnostic that needs no engine: the model with only its weights rounded to int8
(per output channel, symmetric, as both int8 backends round them; BatchNorm's folding scales
each output channel, so rounding before folding is the same) and everything else in fp32. When
that alone changes predictions, the network itself is fragile: no activation quantizer can do
better than it.

    .venv/bin/python benchmarks/precision_agreement.py --compare runs/compare

or for any weights trained on digits (e.g. the mobile nets trained until they converge):

    .venv/bin/python benchmarks/precision_agreement.py --weights runs/mnv2/model.safetensors \
        --out benchmarks/results/precision_agreement_converged.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

from cnnzoo.data import load_dataset
from cnnzoo.environment import environment
from cnnzoo.inference import agreement, calibration_images, optimize
from cnnzoo.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("bf16", "openvino_bf16", "int8", "openvino_int8")
AUTO_INT8 = "auto_int8"  # optimize(model, "auto", precision="int8")
THREADS = 2


def int8_weights_only(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose convolution and linear weights are rounded to int8, one scale
    per output channel (the largest |w| maps to 127); activations stay fp32."""
    rounded = copy.deepcopy(model).eval()
    for module in rounded.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            w = module.weight.data
            scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
            module.weight.data = (w / scale).round().clamp(-127, 127) * scale
    return rounded


def measure(weights: Path) -> dict:
    model, report = load_weights(None, weights)
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    calibration = calibration_images(data.train, 256)
    val = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = data.val.labels
    with torch.inference_mode():
        logits = model(val)
    fp32 = float((logits.argmax(1) == labels).float().mean())
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]  # how far fp32's first class is ahead of its second
    row = {"model": report.model, "images": len(val), "fp32_val_acc": fp32, "backends": {}}
    for backend in (*BACKENDS, AUTO_INT8, "int8_weights_only"):
        if backend == "int8_weights_only":
            runner = int8_weights_only(model)
        elif backend == AUTO_INT8:
            with tempfile.TemporaryDirectory() as cache:  # auto measures here, now
                runner = optimize(
                    model, "auto", precision="int8", example_input=val[:8],
                    calibration=calibration, threads=THREADS, model_name=report.model,
                    cache_dir=cache,
                )  # fmt: skip
        else:
            runner = optimize(
                model, backend, example_input=val[:8], calibration=calibration,
                threads=THREADS, model_name=report.model,
            )  # fmt: skip
        top1, diff = agreement(runner, model, val)
        reduced = runner(val).argmax(1)
        acc = float((reduced == labels).float().mean())
        differ = reduced != logits.argmax(1)
        worst = float(margin[differ].max()) if differ.any() else None
        row["backends"][backend] = {
            "top1_agreement": top1, "max_abs_diff": diff, "val_acc": acc,
            # the images whose class changed: how close fp32's own top two were there
            "largest_fp32_margin_where_they_differ": worst,
            "median_fp32_margin": float(margin.median()),
        }  # fmt: skip
        if backend == AUTO_INT8:
            timed = {c.name: c.median_ms for c in runner.measurements}
            row["backends"][backend] |= {
                "picked": runner.backend, "precision": runner.precision, "timed_ms": timed,
            }  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", default=str(ROOT / "runs/compare"))
    parser.add_argument("--weights", nargs="+", help="model.safetensors files instead of --compare")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/precision_agreement.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.weights:
        runs, source = [Path(w) for w in args.weights], {"weights": args.weights}
    else:
        runs, source = (
            sorted(Path(args.compare).glob("runs/*/model.safetensors")),
            {"compare": str(args.compare)},
        )
    if not runs:
        sys.exit(f"no runs/<model>/model.safetensors under {args.compare}: run cnnzoo compare")
    results: dict = {**environment(THREADS), **source, "rows": []}
    for weights in runs:
        row = measure(weights)
        results["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    every = [r["backends"][b]["top1_agreement"] for r in results["rows"] for b in BACKENDS]
    results["lowest_top1_agreement"] = min(every)
    picked = [r["backends"][AUTO_INT8]["top1_agreement"] for r in results["rows"]]
    results["lowest_auto_int8_agreement"] = min(picked)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
