"""Does ``auto`` pick what a separate measurement finds fastest? The five models at small inputs.

For each model and batch size, ``cnnzoo.bench.run_bench`` builds every fp32 backend and ``auto``
(with an empty cache, so that auto measures), then times all of them side by side in
interleaved rounds (rotating order, 20 ms pause before each call). Auto's row runs what it
picked in its own measurement; the other rows are the separate measurement. Agreement: auto's
median within 5% of the fastest row's. Small inputs are where auto used to go wrong (issue 15:
GoogLeNet at 32 px picked a torch backend 3× slower than ONNX Runtime); 224 px is in
``inference_vs_peers.py``.

    .venv/bin/python benchmarks/auto_agreement.py                 # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "googlenet", "densenet121")
FP32 = ("eager", "channels_last", "fused", "fused_channels_last", "onnxruntime", "openvino")
TOLERANCE = 1.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/auto_agreement.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CNNZOO_CACHE"] = cache  # auto measures every time
        from cnnzoo.bench import run_bench

        result = run_bench(
            args.models.split(","), [*FP32, "auto"],
            [int(b) for b in args.batch_sizes.split(",")],
            image_size=args.image_size, threads=args.threads, rounds=args.rounds, memory=False,
        )  # fmt: skip
    cases = []
    for model in dict.fromkeys(r.model for r in result.rows):
        for batch in dict.fromkeys(r.batch for r in result.rows):
            rows = [r for r in result.rows if r.model == model and r.batch == batch]
            auto = next(r for r in rows if r.backend == "auto")
            best = min((r for r in rows if r.backend != "auto"), key=lambda r: r.p50_ms)
            ratio = auto.p50_ms / best.p50_ms
            cases.append({
                "model": model, "batch": batch, "auto_picked": auto.picked,
                "auto_p50_ms": auto.p50_ms, "fastest": best.backend, "fastest_p50_ms": best.p50_ms,
                "p50_ms": {r.backend: r.p50_ms for r in rows},
                "auto_over_fastest": ratio, "agrees": ratio <= TOLERANCE,
            })  # fmt: skip
            print(json.dumps(cases[-1]), file=sys.stderr, flush=True)
    out = result.to_dict() | {"image_size": args.image_size, "cases": cases}
    out["agreeing"] = f"{sum(c['agrees'] for c in cases)}/{len(cases)}"
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(out["agreeing"], "cases within", TOLERANCE, "of the fastest row")


if __name__ == "__main__":
    main()
