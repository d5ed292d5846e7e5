"""Time `cnnzoo.summarize(name)` for every registered model beside torchinfo, in one run.

Each model is summarized at its default input, model construction included on both sides:
cnnzoo builds on the meta device and traces shapes only; torchinfo needs a real model (built
and initialised on the CPU) and runs a real forward pass. Repeats are interleaved (model by
model, cnnzoo then torchinfo, the whole zoo once per repeat) and medians are reported.

torchinfo is not a project dependency; install it beside this script, outside the venv:

    .venv/bin/pip install --no-deps --target benchmarks/.deps torchinfo
    .venv/bin/python benchmarks/analyze_zoo.py --repeats 3

Results: a table on stdout and ``benchmarks/results/analyze_zoo.json`` (machine, versions,
thread count, load average, the exact command).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / ".deps"))

import torch  # noqa: E402

import cnnzoo  # noqa: E402


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_cnnzoo(name: str) -> float:
    start = time.perf_counter()
    cnnzoo.summarize(name)
    return time.perf_counter() - start


def time_torchinfo(name: str) -> float:
    import torchinfo

    spec = cnnzoo.get_spec(name)
    start = time.perf_counter()
    model = cnnzoo.create_model(name)
    torchinfo.summary(model, input_size=(1, *spec.input_size), verbose=0, device="cpu")
    elapsed = time.perf_counter() - start
    del model
    gc.collect()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-torchinfo", action="store_true", help="time cnnzoo only")
    parser.add_argument(
        "--torchinfo-skip", default="", help="comma-separated models not to run torchinfo on"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "analyze_zoo.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import torchinfo

        tinfo_version = torchinfo.__version__
    except ImportError:
        tinfo_version = None
    use_tinfo = tinfo_version is not None and not args.no_torchinfo
    skip = {s for s in args.torchinfo_skip.split(",") if s}
    names = cnnzoo.list_models()
    load_before = os.getloadavg()

    time_cnnzoo("lenet5")  # warm-up: imports and first-call costs, untimed
    if use_tinfo:
        time_torchinfo("lenet5")
    ours: dict[str, list[float]] = {n: [] for n in names}
    theirs: dict[str, list[float]] = {n: [] for n in names if use_tinfo and n not in skip}
    totals = []
    for _ in range(args.repeats):
        total = 0.0
        for name in names:
            t = time_cnnzoo(name)
            ours[name].append(t)
            total += t
            if name in theirs:
                theirs[name].append(time_torchinfo(name))
        totals.append(total)

    rows = []
    print(f"{'model':<22}{'input':>12}{'cnnzoo s':>10}{'torchinfo s':>13}{'speed-up':>10}")
    for name in names:
        c, h, w = cnnzoo.get_spec(name).input_size
        ours_s = statistics.median(ours[name])
        theirs_s = statistics.median(theirs[name]) if name in theirs else None
        ratio = theirs_s / ours_s if theirs_s is not None else None
        rows.append(
            {
                "model": name,
                "input": [c, h, w],
                "cnnzoo_s": round(ours_s, 4),
                "torchinfo_s": None if theirs_s is None else round(theirs_s, 4),
                "speedup": None if ratio is None else round(ratio, 2),
            }
        )
        t_text = "-" if theirs_s is None else f"{theirs_s:.3f}"
        r_text = "-" if ratio is None else f"{ratio:.1f}×"
        print(f"{name:<22}{f'{c}x{h}x{w}':>12}{ours_s:>10.3f}{t_text:>13}{r_text:>10}")
    total = statistics.median(totals)
    slow = [r for r in rows if r["torchinfo_s"] is not None and r["torchinfo_s"] >= 0.5]
    worst = min((r["speedup"] for r in slow), default=None)
    print(f"cnnzoo total for {len(names)} models: median {total:.2f} s (target < 10 s)")
    print(
        f"models where torchinfo takes ≥ 0.5 s: {len(slow)}; smallest speed-up there: "
        f"{worst}× (target ≥ 2×)"
    )
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchinfo": tinfo_version,
        },
        "threads": torch.get_num_threads(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "repeats": args.repeats,
        "torchinfo_skipped": sorted(skip),
        "cnnzoo_total_s": round(total, 3),
        "cnnzoo_totals_s": [round(t, 3) for t in totals],
        "smallest_speedup_where_torchinfo_ge_0_5s": worst,
        "models": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
