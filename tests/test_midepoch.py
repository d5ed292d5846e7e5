"""Long runs that survive anything: mid-epoch checkpoints (``--checkpoint-every``), SIGTERM and
SIGINT (finish the step, save, exit 75), and torchrun's elastic restarts (``--resume auto``).

Every claim is checked against an uninterrupted run of the same options, bitwise (the weights
and every metric but the timings). The runs are LeNet-5 on the built-in digits at batch 64
(23 steps an epoch), started by ``tests/zygote.py``: one process that has imported torch forks
one child per run, so that a dozen killed and resumed runs cost their training, not a dozen
interpreter start-ups.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.data.loader import make_loader, mix_seed
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.training import fault as faults
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.signals import EXIT_INTERRUPTED, resume_command, stop_on_signals

STEPS = 23  # ceil(1,437 / 64)
EPOCHS = 2
BASE = ["train", "--model", "lenet5", "--dataset", "digits", "--epochs", str(EPOCHS),
        "--batch-size", "64", "--deterministic", "--quiet"]  # fmt: skip
TIMING = {"seconds", "images_per_s"}


class Zygote:
    """The client of tests/zygote.py."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop(faults.ENV, None)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def start(self, *runs: dict) -> list[int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"runs": list(runs)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pids"]

    def wait(self) -> list[int]:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())["codes"]

    def train(self, out: Path, *extra: str, fault: str | None = None) -> int:
        self.start(_run(out, *extra, fault=fault))
        return self.wait()[0]

    def close(self) -> None:
        self.proc.kill()  # idle between runs: nothing of it to keep
        self.proc.wait(timeout=30)


def _run(out: Path, *extra: str, fault: str | None = None, env: dict | None = None) -> dict:
    return {
        "argv": [*BASE, "--out", str(out), *extra],
        "env": {faults.ENV: fault, **(env or {})},
        "log": str(out.parent / f"{out.name}.log"),
    }


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def reference(zygote, tmp_path_factory) -> dict[int, Path]:
    """Uninterrupted runs (no --checkpoint-every: saving must not change the run), with 0 and
    2 data-loading workers."""
    runs = {}
    for workers in (0, 2):
        out = tmp_path_factory.mktemp("runs") / f"full{workers}"
        assert zygote.train(out, "--num-workers", str(workers)) == 0, _log(out)
        runs[workers] = out
    return runs


def _log(out: Path) -> str:
    path = out.parent / f"{out.name}.log"
    return path.read_text()[-3000:] if path.exists() else ""


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bitwise
    assert _metrics(a) == _metrics(b)


def _checkpoint_step(out: Path) -> int:
    """Steps done (counted over the run) in ``out``'s last.pt."""
    state = torch.load(out / "last.pt", weights_only=True)
    if "position" in state:
        return (state["position"]["epoch"] - 1) * STEPS + state["position"]["step"]
    return state["epoch"] * STEPS


# --- the loader: the epoch's order, from any batch on -----------------------------------------


def test_the_order_is_torchs_shuffle_and_a_late_start_serves_the_rest():
    data = torch.utils.data.TensorDataset(torch.arange(103))
    generator = torch.Generator().manual_seed(mix_seed(5, 2))
    torchs = torch.utils.data.DataLoader(data, batch_size=10, shuffle=True, generator=generator)
    expected = [int(i) for (batch,) in torchs for i in batch]
    loader = make_loader(data, batch_size=10, shuffle=True, seed=5, epoch=2)
    assert [int(i) for (batch,) in loader for i in batch] == expected  # the batches runs had
    late = make_loader(data, batch_size=10, shuffle=True, seed=5, epoch=2, start=3)
    assert len(late) == 8
    assert [int(i) for (batch,) in late for i in batch] == expected[30:]


class _Noisy(torch.utils.data.Dataset):
    """Each item draws from torch's generator, as augmentation does."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(()) + i


def test_worker_batches_are_seeded_by_their_number_not_by_the_worker_or_the_start():
    def items(workers: int, start: int) -> list[float]:
        loader = make_loader(_Noisy(), batch_size=4, shuffle=True, seed=1, epoch=3,
                             num_workers=workers, start=start)  # fmt: skip
        return [float(x) for batch in loader for x in batch]

    one, two = items(1, 0), items(2, 0)
    assert one == two  # which worker loads a batch does not matter
    assert items(2, 6) == two[24:]  # nor where the loader starts
    assert len(set(two)) == 40


# --- options and faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"checkpoint_every": -1}, "--checkpoint-every must be"),
        ({"checkpoint_every": 2.5}, "--checkpoint-every must be"),
        ({"resume": "yes"}, "--resume takes no value or auto"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(InvalidArgumentError, match=message) as err:
        TrainConfig(**options)
    assert "\n" not in str(err.value)


def test_a_bad_resume_value_on_the_command_line_is_one_line(tmp_path, capsys):
    from cnnzoo.cli import main

    assert main(["train", "--resume", "yes", "--out", str(tmp_path)]) == 2
    assert "--resume takes no value or auto, got 'yes'" in capsys.readouterr().err


def test_faults_inside_a_mid_epoch_checkpoint_and_on_one_rank():
    fault = faults.parse("kill:checkpoint:epoch=2:step=10")
    assert fault is not None
    assert fault.kills_in_checkpoint(2, 10) and not fault.kills_in_checkpoint(2, 0)
    end = faults.parse("kill:checkpoint:epoch=2")
    assert end is not None and end.kills_in_checkpoint(2, 0)
    one = faults.parse("kill:epoch=2:step=3:rank=1")
    assert one is not None and one.kills_at(2, 3, rank=1) and not one.kills_at(2, 3, rank=0)
    for bad in ("kill:checkpoint:epoch=2:step=0", "kill:checkpoint:epoch=1:rank=1"):
        with pytest.raises(InvalidArgumentError, match="is not a fault"):
            faults.parse(bad)


def test_a_kill_happens_on_the_first_attempt_only(monkeypatch):
    fault = faults.parse("kill:epoch=1:step=2")
    assert fault is not None
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert fault.kills_at(1, 2)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun restarted the group
    assert not fault.kills_at(1, 2)


def test_signal_handlers_are_restored_and_the_resume_command_is_exact():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as request:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)  # the first one only asks
        assert request.requested() and request.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
    assert resume_command(["train", "--out", "a b"]) == "cnnzoo train --out 'a b' --resume"
    assert resume_command(["train", "--resume", "auto"]) == "cnnzoo train --resume auto"


def test_a_mid_epoch_checkpoint_resumes_only_with_the_processes_that_wrote_it():
    from cnnzoo.errors import CheckpointError
    from cnnzoo.training.distributed import Dist
    from cnnzoo.training.trainer import _position_from

    record = {"epoch": 2, "lr": 0.1, "step": 5, "seconds": 1.0, "shards": [[3.0, 2, 4]] * 2}
    assert _position_from(record, Path("r/last.pt"), Dist(1, 1, 2)).images == 4
    with pytest.raises(CheckpointError, match="written by 2 processes in the middle of epoch 2"):
        _position_from(record, Path("r/last.pt"), Dist())


def test_a_signal_inside_compare_stops_the_comparison(tmp_path, monkeypatch, capsys):
    from cnnzoo.cli import main
    from cnnzoo.compare import runs
    from cnnzoo.training.trainer import RunResult

    def interrupted_fit(config, **kwargs):
        return RunResult(Path(config.out), [], interrupted="SIGTERM at epoch 1, step 3 of 23")

    monkeypatch.setattr(runs, "fit", interrupted_fit)
    code = main(["compare", "--models", "lenet5", "--epochs", "1", "--out", str(tmp_path)])
    assert code == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cnnzoo compare: lenet5 (seed 0) stopped by SIGTERM at epoch 1")
    assert err[-1].endswith("run the same command again to resume.")


# --- mid-epoch checkpoints, signals, kills -----------------------------------------------------


def test_sigterm_stops_after_the_step_saves_and_exits_75_within_2_s(zygote, reference, tmp_path):
    # With 2 loader workers: the resume from this mid-epoch checkpoint is the proof for workers
    # (the ten kills below run without).
    out, log = tmp_path / "run", tmp_path / "run.log"
    [pid] = zygote.start(_run(out, "--checkpoint-every", "5", "--num-workers", "2"))
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():  # the first mid-epoch checkpoint: training is on
        assert time.monotonic() < deadline, _log(out)
        time.sleep(0.02)
    signalled = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    [code] = zygote.wait()
    seconds = time.monotonic() - signalled
    assert code == EXIT_INTERRUPTED, _log(out)
    assert seconds < 2.0
    lines = log.read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM at epoch ")
    state = torch.load(out / "last.pt", weights_only=True)
    where = state["position"]
    assert f"at epoch {where['epoch']}, step {where['step']} of {STEPS};" in lines[0]
    command = lines[0].split("resume with: ")[1].split()
    assert command[0] == "cnnzoo" and command[-1] == "--resume"
    zygote.start({"argv": command[1:], "env": {}, "log": str(tmp_path / "resumed.log")})
    assert zygote.wait() == [0], (tmp_path / "resumed.log").read_text()[-3000:]  # as printed
    assert_same_run(reference[2], out)


def test_a_second_signal_stops_at_once(zygote, tmp_path):
    out = tmp_path / "run"
    [pid] = zygote.start(_run(out, "--checkpoint-every", "1"))
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert time.monotonic() < deadline, _log(out)
        time.sleep(0.02)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGINT)
    [code] = zygote.wait()
    assert code in (-signal.SIGINT, EXIT_INTERRUPTED)  # the second came before the step ended
    assert code == -signal.SIGINT or "stopped by SIGINT" in _log(out)


def _kill_points(seed: int = 14, count: int = 10) -> list[tuple[int, str]]:
    """``count`` points of a run of EPOCHS × STEPS steps, as (steps done when it dies, fault),
    seeded: 3 inside the write of a checkpoint (mid-epoch or an epoch's), 7 before a step."""
    rng = random.Random(seed)
    total = EPOCHS * STEPS
    saves = [d for d in range(1, total) if d % STEPS == 0 or (d % STEPS) % 5 == 0]
    in_write = set(rng.sample(saves, 3))
    before = rng.sample([d for d in range(1, total) if d not in in_write], count - 3)
    points = []
    for done in sorted([*in_write, *before]):
        if done in in_write:
            epoch, step = (done - 1) // STEPS + 1, (done - 1) % STEPS + 1
            fault = f"kill:checkpoint:epoch={epoch}" + (f":step={step}" if step < STEPS else "")
        else:  # before step done + 1 runs
            fault = f"kill:epoch={done // STEPS + 1}:step={done % STEPS + 1}"
        points.append((done, fault))
    return points


def test_ten_kills_at_random_points_lose_at_most_5_steps_and_change_nothing(
    zygote, reference, tmp_path
):
    out, extra = tmp_path / "run", ["--checkpoint-every", "5"]
    lost = []
    for i, (done, fault) in enumerate(_kill_points()):
        resume = ["--resume"] if i else []
        assert zygote.train(out, *extra, *resume, fault=fault) == -signal.SIGKILL, (
            fault,
            _log(out),
        )
        lost.append(done - _checkpoint_step(out))
    assert zygote.train(out, *extra, "--resume") == 0, _log(out)
    assert_same_run(reference[0], out)
    assert len(lost) == 10 and all(0 <= n <= 5 for n in lost), lost
    assert max(lost) == 5  # a kill inside a write loses the 5 steps that write was saving


# --- torchrun: elastic restarts ----------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(out: Path, *extra: str, fault: str | None = None) -> list[dict]:
    """The two processes of a distributed run, with torchrun's environment set by hand."""
    port = str(_free_port())
    ranks = []
    for r in (0, 1):
        env = {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        ranks.append(_run(out, *extra, fault=fault, env=env))
    ranks[1]["log"] = str(out.parent / f"{out.name}.rank1.log")
    return ranks


@pytest.fixture(scope="module")
def ddp_reference(zygote, tmp_path_factory) -> Path:
    """The uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("ddp") / "full"
    zygote.start(*_ranks(out))
    assert zygote.wait() == [0, 0], _log(out)
    return out


def test_sigterm_to_one_process_stops_both_after_the_same_step(zygote, ddp_reference, tmp_path):
    out = tmp_path / "run"
    pids = zygote.start(*_ranks(out, "--checkpoint-every", "5"))
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert time.monotonic() < deadline, _log(out)
        time.sleep(0.02)
    os.kill(pids[1], signal.SIGTERM)  # rank 1 only: rank 0 hears of it in the step's all-reduce
    assert zygote.wait() == [EXIT_INTERRUPTED, EXIT_INTERRUPTED], _log(out)
    [line] = _log(out).strip().splitlines()  # rank 0 speaks, once
    assert line.startswith("stopped by") and "--resume" in line
    assert "torchrun --nproc-per-node 2 -m cnnzoo train" in line
    zygote.start(*_ranks(out, "--checkpoint-every", "5", "--resume"))
    assert zygote.wait() == [0, 0], _log(out)
    assert_same_run(ddp_reference, out)


def test_torchrun_restarts_a_killed_worker_and_ends_as_the_uninterrupted_run(
    zygote, ddp_reference, tmp_path
):
    # torch's elastic agent (torchrun's), rank 1 SIGKILLed in epoch 2 after the checkpoint of
    # step 5: the agent restarts both, and --resume auto continues from there.
    out = tmp_path / "elastic"
    run = _run(out, "--checkpoint-every", "5", "--resume", "auto",
               fault="kill:epoch=2:step=8:rank=1")  # fmt: skip
    run["argv"].remove("--quiet")  # the log says where the restarted group resumed
    zygote.start(run | {"elastic": {"nproc": 2, "max_restarts": 1}})
    assert zygote.wait() == [0], _log(out)
    log = (tmp_path / "elastic.log").read_text()
    assert f"resumed from {out / 'last.pt'} at epoch 2, step 5" in log  # restarted by itself
    assert_same_run(ddp_reference, out)  # bitwise: gloo adds two numbers the same way each time
