"""Inference speed: cnnzoo's ``auto`` backend against what a user could do by hand.

At batch 8, 224×224, 2 threads, for resnet50, mobilenet_v2, efficientnet_b0, googlenet and
densenet121, the peers are torchvision eager, torchvision with channels_last, and ONNX Runtime
(default session options, the same threads) on torchvision's own export; ours is
``cnnzoo.inference.optimize(model, "auto")``. All five contenders of a model are timed in one
run, in rounds in which each runs once, the order rotating from round to round; before every
timed call the script sleeps PAUSE_S, because ONNX Runtime's default session keeps its worker
threads spinning after a run, which was measured to make the PyTorch call that follows about
twice as slow (our own ``onnxruntime`` backend stops its workers spinning as soon as a run
returns instead). Figures are medians.

Then: the best fp32 matmul rate of this machine (the maximum over torch.mm, NumPy and ONNX
Runtime's MatMul on 2048² matrices) against resnet50's achieved GFLOP/s; ONNX Runtime int8
(ours, calibrated) against ONNX Runtime fp32 on resnet50; and the top-1 agreement of int8 with
fp32 for a resnet18 trained on the built-in digits at 64×64 (calibrated on training images,
measured on the validation images).

    .venv/bin/python benchmarks/inference_vs_peers.py          # ~15 minutes on 2 quiet cores
    .venv/bin/python benchmarks/inference_vs_peers.py --models resnet50 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
import torchvision

import cnnzoo
from cnnzoo.data import load_dataset
from cnnzoo.environment import environment
from cnnzoo.inference import optimize
from cnnzoo.inference.auto import interleaved

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "googlenet", "densenet121")
PAUSE_S = 0.05
THREADS = 2


def peer_ort(model: torch.nn.Module, x: torch.Tensor, folder: Path, name: str):
    """ONNX Runtime, default session options (spinning on), on torchvision's own export."""
    path = folder / f"{name}_tv.onnx"
    torch.onnx.export(
        model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False,
    )  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda t: session.run(None, {"x": t.numpy()})[0]


def contenders(name: str, x: torch.Tensor, folder: Path) -> dict:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    tv = getattr(torchvision.models, name)(**kwargs).eval()
    tv_cl = getattr(torchvision.models, name)(**kwargs).eval()
    tv_cl.load_state_dict(tv.state_dict())
    tv_cl = tv_cl.to(memory_format=torch.channels_last)
    ours = cnnzoo.create_model(name).eval()
    ours.load_state_dict(tv.state_dict())  # the same weights: the same outputs

    def eager(t):
        with torch.inference_mode():
            return tv(t)

    def channels_last(t):
        with torch.inference_mode():
            return tv_cl(t.contiguous(memory_format=torch.channels_last))

    start = time.perf_counter()
    auto = optimize(ours, "auto", example_input=x, threads=THREADS, model_name=name)
    auto_setup = time.perf_counter() - start
    runners = {
        "torchvision eager": eager,
        "torchvision channels_last": channels_last,
        "ONNX Runtime (torchvision export)": peer_ort(tv, x, folder, name),
        "cnnzoo auto": auto,
    }
    return runners, auto, auto_setup, tv


def time_rounds(runners: dict, x: torch.Tensor, rounds: int) -> dict[str, float]:
    for runner in runners.values():
        for _ in range(2):
            runner(x)
    times = interleaved(runners, x, rounds, PAUSE_S)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of an n×n fp32 matmul: torch.mm, NumPy and ONNX Runtime's MatMul."""
    import onnx
    from onnx import TensorProto, helper

    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    onnx.checker.check_model(model)
    runs = {
        "torch.mm": lambda: torch.mm(a, b),
        "numpy": lambda: an @ bn,
        "onnxruntime MatMul": lambda: session.run(None, {"a": an, "b": bn}),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for k, fn in runs.items():
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            fn()
            rates[k].append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return {k: statistics.median(v) for k, v in rates.items()}


def int8_agreement(epochs: int) -> dict:
    """A resnet18 trained on digits at 64×64; int8 vs fp32 top-1 on the validation images."""
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import fit
    from cnnzoo.weights import load_weights

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(model="resnet18", dataset="digits", image_size=64, epochs=epochs,
                             out=folder, quiet=True)  # fmt: skip
        run = fit(config)
        model, _ = load_weights(None, Path(folder) / "model.safetensors")
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    train = torch.stack([data.train[i][0] for i in range(256)])
    val = torch.stack([data.val[i][0] for i in range(len(data.val))])
    fp32 = optimize(model, "eager", example_input=val[:8], threads=THREADS)
    int8 = optimize(model, "int8", example_input=val[:8], calibration=train, threads=THREADS)
    a, b = fp32(val), int8(val)
    labels = data.val.labels
    return {
        "epochs": epochs,
        "fp32_val_acc": float((a.argmax(1) == labels).float().mean()),
        "int8_val_acc": float((b.argmax(1) == labels).float().mean()),
        "top1_agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
        "images": len(val),
        "train_val_acc_reported": run.final["val_acc"],
    }


def digits_rgb_224(count: int) -> torch.Tensor:
    """Real images for calibration: training digits, gray repeated to RGB, resized to 224."""
    data = load_dataset("digits", image_size=224, in_chans=3)
    return torch.stack([data.train[i][0] for i in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--digits-epochs", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/inference_vs_peers.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    results: dict = {**environment(THREADS), "batch": 8, "size": 224, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            runners, auto, setup, _tv = contenders(name, x, Path(tmp))
            medians = time_rounds(runners, x, args.rounds)
            ips = {k: 8 / v for k, v in medians.items()}
            best_peer = max(v for k, v in ips.items() if k != "cnnzoo auto")
            results["models"][name] = {
                "img_per_s": ips,
                "auto_picked": auto.backend,
                "auto_setup_s": setup,
                "auto_vs_best_peer": ips["cnnzoo auto"] / best_peer,
                "auto_vs_eager": ips["cnnzoo auto"] / ips["torchvision eager"],
                "ort_vs_eager": ips["ONNX Runtime (torchvision export)"] / ips["torchvision eager"],
            }
            if name == "resnet50":
                macs = cnnzoo.analysis.model_macs(cnnzoo.create_model(name), (3, 224, 224))
                results["models"][name]["auto_gflops"] = 2 * macs * 8 / medians["cnnzoo auto"] / 1e9
                int8 = optimize(
                    cnnzoo.create_model(name).eval(), "int8", example_input=x, threads=THREADS,
                    calibration=digits_rgb_224(32), model_name=name,
                )  # fmt: skip
                ort = runners["ONNX Runtime (torchvision export)"]
                speed = time_rounds({"ort fp32": ort, "int8": int8}, x, args.rounds)
                results["resnet50_int8_vs_ort_fp32"] = speed["ort fp32"] / speed["int8"]
            print(name, json.dumps(results["models"][name]), file=sys.stderr, flush=True)
    peak = matmul_peak()
    results["matmul_gflops"] = peak
    if "resnet50" in results["models"]:
        results["resnet50_fraction_of_matmul_peak"] = results["models"]["resnet50"][
            "auto_gflops"
        ] / max(peak.values())
    ratios = [m["auto_vs_eager"] for m in results["models"].values()]
    ort = [m["ort_vs_eager"] for m in results["models"].values()]
    results["geomean_auto_vs_eager"] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    results["geomean_ort_vs_eager"] = math.exp(sum(map(math.log, ort)) / len(ort))
    results["int8_digits_resnet18_64px"] = int8_agreement(args.digits_epochs)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
