"""Inference speed: cnnzoo's ``optimize`` at each precision against what a user could do by hand.

At 224×224, 2 threads, batch 1 and 8, for resnet50, mobilenet_v2, efficientnet_b0, googlenet
and densenet121 (random torchvision weights: speed does not depend on their values), the peers
are, all on torchvision's own model and its own ONNX export:

- fp32: torchvision eager, torchvision channels_last, ONNX Runtime (default session options),
  OpenVINO (``INFERENCE_PRECISION_HINT=f32``);
- bf16: torch autocast bf16 + channels_last, OpenVINO bf16 (its default on AMX CPUs);
- int8: OpenVINO int8 (NNCF post-training quantization, 32 calibration images), and ONNX
  Runtime int8 (cnnzoo's ``int8`` backend: U8S8 QDQ static quantization);

ours are ``optimize(model, "auto", precision=p)`` for fp32, bf16 and int8 (int8 is the lowest
precision allowed: auto measures the bf16 engines beside the int8 ones, and ``picked`` says
which ran; the int8 column is then what a user asking for int8 gets), each with an empty
cache of its own, so that ``auto`` measures now (a choice cached by an earlier run, perhaps on a
busy machine, would be timed instead of the one this run's ``auto`` makes). Every contender of
a (model, batch) is timed in one run, in rounds in which each runs once, the order rotating from
round to round; before every timed call the script sleeps PAUSE_S, because ONNX Runtime's
default session and torch's OpenMP workers keep spinning after a call (cnnzoo's ``auto`` pauses
20 ms for the same reason). Figures are medians; each ratio against the best peer is given as
the ratio of the medians and, under ``paired``, as the median of the same-round ratios.

Then: the bf16 and fp32 matmul rates of this machine (torch.mm on 2048² matrices) against
resnet50's achieved bf16 GFLOP/s, and the top-1 agreement of bf16 and int8 with fp32 for a
resnet18 trained on the built-in digits at 64×64 (int8 calibrated on training images, agreement
measured on the 360 validation images).

    .venv/bin/python benchmarks/inference_vs_peers.py          # an estimated 30-60 min, 2 cores
    .venv/bin/python benchmarks/inference_vs_peers.py --models resnet50 --batch-sizes 1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
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
from cnnzoo.inference import agreement, calibration_images, optimize
from cnnzoo.inference.auto import interleaved
from cnnzoo.inference.openvino import openvino

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "googlenet", "densenet121")
PAUSE_S = 0.05
THREADS = 2
CALIBRATION = 32  # images for both int8 quantizers (OpenVINO's and ours)
FP32_PEERS = ("torchvision eager", "torchvision channels_last", "ONNX Runtime fp32", "OpenVINO f32")
BF16_PEERS = ("torch bf16 autocast + channels_last", "OpenVINO bf16")
INT8_PEERS = ("OpenVINO int8 (NNCF)",)


def tv_export(model: torch.nn.Module, x: torch.Tensor, folder: Path, name: str) -> Path:
    """torchvision's model exported as a user would (dynamo, dynamic batch)."""
    path = folder / f"{name}_tv.onnx"
    torch.onnx.export(
        model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False,
    )  # fmt: skip
    return path


def peer_ort(path: Path):
    """ONNX Runtime, default session options (spinning on)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda t: session.run(None, {"x": t.numpy()})[0]


def peer_openvino(path: Path, batch: int, hint: str | None, calibration: torch.Tensor | None):
    """OpenVINO on the same export at a static batch: f32, bf16, or NNCF int8 (default hint)."""
    ov = openvino()  # telemetry off first
    core = ov.Core()
    model = core.read_model(str(path))
    if calibration is not None:
        import nncf

        items = [img[None].numpy() for img in calibration]
        model = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    model.reshape({model.inputs[0].any_name: [batch, 3, SIZE, SIZE]})
    config = {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def run(t):
        request.infer({0: t.numpy()}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()

    return run


def peer_bf16(model: torch.nn.Module):
    net = model.to(memory_format=torch.channels_last)

    def run(t):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(t.contiguous(memory_format=torch.channels_last)).float()

    return run


def contenders(name: str, batch: int, x: torch.Tensor, calib: torch.Tensor, folder: Path):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    tv = getattr(torchvision.models, name)(**kwargs).eval()

    def copy_of_tv():
        m = getattr(torchvision.models, name)(**kwargs).eval()
        m.load_state_dict(tv.state_dict())
        return m

    tv_cl = copy_of_tv().to(memory_format=torch.channels_last)
    ours = cnnzoo.create_model(name).eval()
    ours.load_state_dict(tv.state_dict())  # the same weights: the same outputs
    path = folder / f"{name}_tv.onnx"
    if not path.exists():
        tv_export(tv, x, folder, name)

    def eager(t):
        with torch.inference_mode():
            return tv(t)

    def channels_last(t):
        with torch.inference_mode():
            return tv_cl(t.contiguous(memory_format=torch.channels_last))

    runners = {
        "torchvision eager": eager,
        "torchvision channels_last": channels_last,
        "ONNX Runtime fp32": peer_ort(path),
        "OpenVINO f32": peer_openvino(path, batch, "f32", None),
        "torch bf16 autocast + channels_last": peer_bf16(copy_of_tv()),
        "OpenVINO bf16": peer_openvino(path, batch, "bf16", None),
        "OpenVINO int8 (NNCF)": peer_openvino(path, batch, None, calib),
    }
    ours_runners, setup = {}, {}
    for precision in ("fp32", "bf16", "int8"):
        start = time.perf_counter()
        runner = optimize(
            ours, "auto", precision=precision, example_input=x, threads=THREADS,
            model_name=name, calibration=calib, cache_dir=folder / f"cache-{name}-{batch}",
        )  # fmt: skip
        setup[precision] = time.perf_counter() - start
        ours_runners[f"cnnzoo {precision}"] = runner
    runners.update(ours_runners)
    return runners, ours_runners, setup


def time_rounds(runners: dict, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Each runner's seconds per call, round by round (index i: round i)."""
    for runner in runners.values():
        for _ in range(2):
            runner(x)
    return interleaved(runners, x, rounds, PAUSE_S)


def paired_ratio(times: dict[str, list[float]], ours: str, peers: tuple[str, ...]) -> float:
    """Speed of ``ours`` relative to the best of ``peers`` (the one of smallest median), as the
    median over rounds of the peer's time over ours in the same round: a slow spell of the
    machine that spans a round slows both, and cancels, where the ratio of two medians keeps
    it."""
    best = min(peers, key=lambda p: statistics.median(times[p]))
    return statistics.median(p / o for p, o in zip(times[best], times[ours], strict=True))


def matmul_rates(n: int = 2048, repeats: int = 7) -> dict[str, float]:
    """GFLOP/s of an n×n matmul with torch.mm in fp32 and in bf16."""
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    mats = {
        "fp32": (torch.randn(n, n), torch.randn(n, n)),
        "bf16": (torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)),
    }
    for a, b in mats.values():
        torch.mm(a, b)
    for _ in range(repeats):
        for k, (a, b) in mats.items():
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            torch.mm(a, b)
            rates[k].append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return {k: statistics.median(v) for k, v in rates.items()}


def digits_agreement(epochs: int) -> dict:
    """A resnet18 trained on digits at 64×64: each reduced backend against fp32 on the
    validation images (int8 calibrated on 256 training images)."""
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.trainer import fit
    from cnnzoo.weights import load_weights

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(model="resnet18", dataset="digits", image_size=64, epochs=epochs,
                             out=folder, quiet=True)  # fmt: skip
        run = fit(config)
        model, _ = load_weights(None, Path(folder) / "model.safetensors")
    data = load_dataset("digits", preprocessing=model.pretrained_cfg)
    train = calibration_images(data.train, 256)
    val = torch.stack([data.val[i][0] for i in range(len(data.val))])
    labels = data.val.labels
    with torch.inference_mode():
        fp32_acc = float((model(val).argmax(1) == labels).float().mean())
    out = {"epochs": epochs, "images": len(val), "fp32_val_acc": fp32_acc,
           "train_val_acc_reported": run.final["val_acc"], "backends": {}}  # fmt: skip
    for backend in ("bf16", "openvino_bf16", "int8", "openvino_int8"):
        runner = optimize(model, backend, example_input=val[:8], calibration=train,
                          threads=THREADS)  # fmt: skip
        top1, diff = agreement(runner, model, val)
        acc = float((runner(val).argmax(1) == labels).float().mean())
        out["backends"][backend] = {"top1_agreement": top1, "max_abs_diff": diff, "val_acc": acc}
    return out


def main() -> None:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--digits-epochs", type=int, default=8, help="0 skips the agreement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/inference_vs_peers.json"))
    args = parser.parse_args()
    SIZE = args.size
    torch.set_num_threads(THREADS)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    data = load_dataset("digits", image_size=SIZE, in_chans=3)  # real images for calibration
    calib = calibration_images(data.train, CALIBRATION)
    results: dict = {**environment(THREADS), "size": SIZE, "batches": batches, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for batch in batches:
                x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
                runners, ours, setup = contenders(name, batch, x, calib, Path(tmp))
                times = time_rounds(runners, x, args.rounds)
                quartiles = {k: statistics.quantiles(t, n=4) for k, t in times.items()}
                medians = {k: q[1] for k, q in quartiles.items()}
                ips = {k: batch / v for k, v in medians.items()}
                ort = ips["ONNX Runtime fp32"]
                row = {
                    "model": name, "batch": batch,
                    "img_per_s": ips,
                    "ms_quartiles": {k: [round(1e3 * t, 3) for t in q]
                                     for k, q in quartiles.items()},
                    "ratio_to_ort_fp32": {k: v / ort for k, v in ips.items()},
                    "picked": {k: r.backend for k, r in ours.items()},
                    "setup_s": setup,
                    "accuracy_on_calibration": {
                        k: r.accuracy.line() for k, r in ours.items() if r.accuracy is not None
                    },
                    "fp32_vs_best_peer": ips["cnnzoo fp32"] / max(ips[p] for p in FP32_PEERS),
                    "bf16_vs_best_peer": ips["cnnzoo bf16"] / max(ips[p] for p in BF16_PEERS),
                    "int8_vs_openvino_int8": ips["cnnzoo int8"] / ips[INT8_PEERS[0]],
                    "paired": {
                        "fp32_vs_best_peer": paired_ratio(times, "cnnzoo fp32", FP32_PEERS),
                        "bf16_vs_best_peer": paired_ratio(times, "cnnzoo bf16", BF16_PEERS),
                        "int8_vs_openvino_int8": paired_ratio(times, "cnnzoo int8", INT8_PEERS),
                    },
                }  # fmt: skip
                if name == "resnet50":
                    macs = cnnzoo.analysis.model_macs(cnnzoo.create_model(name), (3, SIZE, SIZE))
                    row["bf16_gflops"] = 2 * macs * batch / medians["cnnzoo bf16"] / 1e9
                results["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    results["matmul_gflops"] = matmul_rates()
    for row in results["rows"]:
        if "bf16_gflops" in row:
            rate = results["matmul_gflops"]["bf16"]
            row["bf16_fraction_of_bf16_matmul"] = row["bf16_gflops"] / rate
    if args.digits_epochs > 0:
        results["digits_resnet18_64px"] = digits_agreement(args.digits_epochs)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


SIZE = 224

if __name__ == "__main__":
    main()
