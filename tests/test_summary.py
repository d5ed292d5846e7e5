"""The analyzer: per-layer rows and totals against published numbers, real forward passes,
FlopCounterMode, hand-worked textbook numbers and a measured training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.analysis.input_size import check_input, valid_input_range
from cnnzoo.analysis.summary import summarize
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from tests.conftest import load_reference

REFERENCE = load_reference()
NAMES = [n for n in REFERENCE if n in cnnzoo.list_models()]


def _real(name: str, **kwargs) -> nn.Module:
    """A model with real, uninitialised storage: shapes are all these tests need, and skipping
    the initialisation of VGG's 100M+ weights keeps them fast."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **kwargs)
    return model.to_empty(device="cpu").eval()


@pytest.mark.parametrize("name", NAMES)
def test_macs_match_reference(name: str):
    ref = REFERENCE[name]
    got = summarize(name, tuple(ref["input"]), num_classes=ref.get("num_classes", 1000))
    assert abs(got.macs - ref["macs"]) <= 1e-3 * ref["macs"]
    assert got.params == ref["params"]
    assert got.flops == 2 * got.macs
    assert got.unknown == {}


@pytest.mark.parametrize(
    ("name", "size"),
    [("lenet5", 32), ("resnet20", 32), ("mobilenet_v2", 32), ("googlenet", 40), ("alexnet", 63)],
)
def test_macs_equal_flop_counter_on_a_real_forward(name: str, size: int):
    model = _real(name, num_classes=10)
    channels = cnnzoo.get_spec(name).input_size[0]
    x = torch.rand(2, channels, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    # FlopCounterMode counts 2 per multiply-add of convolutions and matrix products.
    assert (
        summarize(model, (channels, size, size), batch_size=2).macs
        == counter.get_total_flops() // 2
    )


def _sizes(name: str) -> list[int]:
    spec = cnnzoo.get_spec(name)
    high = spec.max_size if spec.max_size is not None else spec.min_size + 9
    return sorted({spec.min_size, min(spec.min_size + 9, high)})


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_every_row_shape_equals_the_real_forward(name: str):
    model = _real(name, num_classes=10)
    channels = cnnzoo.get_spec(name).input_size[0]
    real: list[tuple[str, tuple[int, ...]]] = []

    def record(module: nn.Module, _inputs: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            real.append((names[module], tuple(out.shape)))

    names = {m: n for n, m in model.named_modules() if next(m.children(), None) is None}
    hooks = [m.register_forward_hook(record) for m in names]
    for side in _sizes(name):
        real.clear()
        with torch.no_grad():
            model(torch.rand(1, channels, side, side))
        shapes = list(real)
        for h in hooks:  # the shape-only pass would call them too
            h.remove()
        rows = summarize(model, (channels, side, side)).layers
        assert [(r.name, r.output_shape) for r in rows] == shapes
        hooks = [m.register_forward_hook(record) for m in names]
    for h in hooks:
        h.remove()


def test_textbook_output_sizes():
    alexnet = summarize("alexnet")
    assert alexnet.layers[0].input_shape[-1] == 224
    assert alexnet.layers[0].output_shape[-1] == 55  # ⌊(224 − 11 + 2·2)/4⌋ + 1
    assert alexnet.layers[0].params == 64 * (11 * 11 * 3 + 1)
    lenet = summarize("lenet5")
    sides = [r.output_shape[-1] for r in lenet.layers if r.type in ("Conv2d", "AvgPool2d")]
    assert sides[:4] == [28, 14, 10, 5]  # C1, S2, C3, S4 on a 32×32 input


def test_rows_carry_geometry_blocks_and_bytes():
    rows = {r.name: r for r in summarize("resnet18").layers}
    conv = rows["layer2.0.conv1"]
    assert (conv.kernel, conv.stride, conv.padding, conv.groups) == ((3, 3), (2, 2), (1, 1), 1)
    assert conv.block == "layer2" and rows["conv1"].block == "stem" and rows["fc"].block == "fc"
    assert conv.output_bytes == 128 * 28 * 28 * 4
    assert rows["relu"].inplace and rows["bn1"].buffers == 64 + 64 + 1
    half = summarize(cnnzoo.create_model("resnet18").half(), (3, 224, 224))
    assert half.layers[0].output_bytes == 64 * 112 * 112 * 2
    assert half.param_bytes == 2 * half.params


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_valid_input_range_matches_registered_metadata(name: str):
    spec = cnnzoo.get_spec(name)
    assert valid_input_range(name) == (spec.min_size, spec.max_size)


def test_alexnet_at_32_fails_before_running_and_names_the_minimum():
    with pytest.raises(InputSizeError) as error:
        check_input("alexnet", (3, 32, 32))
    message = str(error.value)
    assert "\n" not in message
    assert "features.12 (MaxPool2d)" in message and "1×1" in message
    assert "⌊(1 − 3 + 2·0)/2⌋ + 1 = 0" in message and "63" in message
    with pytest.raises(InputSizeError, match="63"):
        summarize("alexnet", (3, 32, 32))
    check_input("alexnet", (3, 63, 63))


@pytest.mark.parametrize(
    ("name", "size", "words"),
    [
        ("mlp", (1, 28, 28), ["hidden.0 (Linear)", "1·28·28 = 784", "exactly 32×32"]),
        ("lenet5", (1, 36, 36), ["f6 (Linear)", "120·2·2 = 480", "32-35"]),
        ("vgg16", (3, 31, 31), ["MaxPool2d", "32+"]),
    ],
)
def test_check_input_names_layer_formula_and_range(name, size, words):
    with pytest.raises(InputSizeError) as error:
        check_input(name, size)
    for word in words:
        assert word in str(error.value)


def test_user_model_is_left_untouched():
    model = cnnzoo.create_model("resnet20")
    model.layer1[0].bn1.train()  # a mixed train/eval state must survive
    model.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    result = summarize(model, (3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(rng, torch.get_rng_state())
    assert result.params_frozen == model.conv1.weight.numel()
    assert result.params_trainable == result.params - result.params_frozen


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3)
        self.kernel = nn.Parameter(torch.ones(8, 8, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x) * self.scale
        return nn.functional.conv2d(x, self.kernel)  # a convolution outside any Conv2d


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_unknown_types_and_functional_convolutions_are_listed_not_zeroed():
    model = nn.Sequential(_Custom(), _Gate())
    result = summarize(model, (3, 10, 10))
    assert result.unknown == {"conv2d (functional)": 1, "_Gate": 1}
    assert result.macs == 8 * 8 * 8 * 27  # the Conv2d module only


def test_training_memory_parts_and_errors():
    result = summarize("resnet18", batch_size=2)
    weights = result.param_bytes + result.buffer_bytes
    sgd, adam = result.training_memory("sgd"), result.training_memory("adam", batch_size=8)
    assert sgd.weights == weights and sgd.gradients == result.trainable_bytes
    assert sgd.optimizer_state == 0 and adam.optimizer_state == 2 * result.trainable_bytes
    assert adam.activations == 4 * sgd.activations
    assert adam.total == sum((adam.weights, adam.gradients, adam.optimizer_state, adam.activations))
    with pytest.raises(InvalidArgumentError, match="lbfgs"):
        result.training_memory("lbfgs")


def _measured_training_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Weights + gradients + Adam state after one real CPU step, and the bytes of every distinct
    storage autograd saved for backward (``saved_tensors_hooks``; parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    optimizer = torch.optim.Adam(model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).sum()
    loss.backward()
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    grads = [p.grad for p in model.parameters()]
    fixed = [*model.parameters(), *model.buffers(), *grads, *state]
    return sum(t.numel() * t.element_size() for t in fixed), sum(saved.values())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_training_memory_estimate_against_a_measured_step(name: str):
    """Measured at 4×3×64×64 as in ``_measured_training_bytes``. Errors when written: resnet18
    −1.1% on activations (−0.04% in total), mobilenet_v2 −0.8% (−0.3%); googlenet, vgg11_bn,
    efficientnet_b0 and mobilenet_v3_small were within ±1.3%, densenet121 −3.8%. We allow 5%
    on activations and 2% in total."""
    model = _real(name, num_classes=10)
    for p in model.parameters():  # finite values, so that the step is a normal one
        nn.init.uniform_(p, -0.01, 0.01)
    estimate = summarize(model, (3, 64, 64), batch_size=4).training_memory("adam")
    fixed, activations = _measured_training_bytes(model, torch.rand(4, 3, 64, 64))
    assert estimate.weights + estimate.gradients + estimate.optimizer_state == fixed
    assert abs(estimate.activations - activations) <= 0.05 * activations
    assert abs(estimate.total - fixed - activations) <= 0.02 * (fixed + activations)


# --- no process-wide side effects ------------------------------------------------------------


def _process_state() -> dict:
    module = nn.modules.module
    return {
        "init": {name: getattr(nn.init, name) for name in dir(nn.init)},
        "hooks": [
            dict(getattr(module, attr))
            for attr in dir(module)
            if attr.startswith("_global_") and isinstance(getattr(module, attr), dict)
        ],
    }


class _Watcher(nn.Module):
    """A leaf that looks at the process while the analyzer runs it, then maybe fails."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fail = fail
        self.seen: list = []

    def forward(self, x):
        module = nn.modules.module
        self.seen.append(
            (dict(module._global_forward_pre_hooks), dict(module._global_forward_hooks))
        )
        if self.fail:
            raise RuntimeError("boom")
        return self.conv(x)


def test_the_analyzer_leaves_init_and_hooks_as_they_were():
    before = _process_state()
    summarize("resnet18")
    valid_input_range("googlenet")
    with pytest.raises(InputSizeError):
        summarize("alexnet", (3, 32, 32))
    watcher = _Watcher(fail=True)
    with pytest.raises(RuntimeError, match="boom"):
        summarize(watcher, (1, 8, 8))
    assert _process_state() == before
    # No global hooks even while tracing, and the model's own hooks are gone afterwards.
    watcher = _Watcher()
    summarize(watcher, (1, 8, 8))
    assert watcher.seen == [({}, {})]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in watcher.modules())


def test_another_thread_initialises_while_a_model_builds_on_meta():
    import threading

    from cnnzoo.analysis.trace import meta_build

    result = {}

    def elsewhere():
        real = torch.zeros(1000)
        nn.init.normal_(real)
        result["device"], result["std"] = torch.empty(1).device.type, real.std().item()

    with meta_build():
        # Inside: this thread builds on meta, its initialisers skipped...
        assert torch.empty(1).device.type == "meta"
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    # ... while another thread's tensors are real and initialised as usual.
    assert result["device"] == "cpu" and 0.9 < result["std"] < 1.1


@pytest.mark.parametrize(
    ("size", "fix"),
    [
        ((32, 32), "give the channels too, e.g. (3, 32, 32)"),
        ((3, 0, 32), "e.g. (3, 224, 224)"),
        ("3x32x32", "e.g. (3, 224, 224)"),
        ((3, 32.0, 32), "e.g. (3, 224, 224)"),
    ],
)
def test_an_input_size_that_is_not_c_h_w_is_one_line(size, fix):
    for call in (summarize, check_input, valid_input_range):
        with pytest.raises(InvalidArgumentError) as info:
            call("resnet20", size)
        assert str(info.value) == (
            f"input_size must be (C, H, W), three positive integers, got {size!r}: {fix}."
        )
    with pytest.raises(InvalidArgumentError, match="give the channels too"):
        summarize(nn.Conv2d(3, 4, 3), (8, 8))
