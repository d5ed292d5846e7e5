"""ONNX Runtime's spinning workers: the CPU time a session burns while idle after a run.

cnnzoo's sessions (``cnnzoo.inference.ort_session``) let the intra-op workers spin between the
operators of a run but stop them when it returns (``session.force_spinning_stop``); ONNX
Runtime's default session keeps them spinning for a while after each run, taking the cores from
whatever runs next in the process. The tests check the setting itself (a time measured on a
shared machine is no test); this script measures what it is for: the process CPU time during a
pause of PAUSE_S after each run, for both sessions on the same exported resnet18 (64×64, batch
4, 2 threads), in rounds that alternate the two, median over the rounds. An idle process uses
about 0 ms; a spinning one up to threads × PAUSE_S. The load average before and after is kept
with the figures: other busy processes take cores the workers would spin on.

    .venv/bin/python benchmarks/ort_spinning.py            # about a minute
    .venv/bin/python benchmarks/ort_spinning.py --rounds 21
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

import cnnzoo
from cnnzoo.environment import environment
from cnnzoo.export import export_model
from cnnzoo.inference import ort_session

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
PAUSE_S = 0.2


def idle_cpu_ms(session, x) -> float:
    """Process CPU time (ms) during a pause right after one run of ``session``."""
    session.run(None, {"images": x})
    start = time.process_time()
    time.sleep(PAUSE_S)
    return (time.process_time() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ort_spinning.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18", num_classes=10).eval()
    x = torch.randn(4, 3, 64, 64).numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.onnx"
        export_model(model, path, "onnx", input_size=(3, 64, 64), model_name="resnet18")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        sessions = {
            "cnnzoo (spinning stops after a run)": ort_session(path, THREADS),
            "onnxruntime default": onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            ),
        }
        for session in sessions.values():  # warm up: first runs allocate
            session.run(None, {"images": x})
        ms: dict[str, list[float]] = {name: [] for name in sessions}
        for i in range(args.rounds):
            order = list(sessions) if i % 2 == 0 else list(reversed(sessions))
            for name in order:
                ms[name].append(idle_cpu_ms(sessions[name], x))

    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **environment(THREADS),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "pause_ms": PAUSE_S * 1e3,
        "rounds": args.rounds,
        "idle_cpu_ms_median": {name: statistics.median(v) for name, v in ms.items()},
        "idle_cpu_ms": ms,
    }
    print(f"{'session':40} {'CPU ms in a ' + str(int(PAUSE_S * 1e3)) + ' ms idle pause':>32}")
    for name, value in results["idle_cpu_ms_median"].items():
        print(f"{name:40} {value:>32.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
