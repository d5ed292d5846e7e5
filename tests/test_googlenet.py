"""GoogLeNet: the paper's Table 1, the auxiliary classifiers (outputs, torchvision parity, the
paper heads' fixed input), ``transform_input``, and the paper variant's layers.

References: the paper (Table 1, Figure 3, §5 on the auxiliary classifiers), REFERENCE.md §3.4,
the BVLC Caffe replication's LRN constants, and torchvision itself.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.analysis import count_params, model_macs
from cnnzoo.errors import InputSizeError, InvalidArgumentError
from cnnzoo.models.googlenet import GoogLeNetOutputs
from tests.conftest import load_reference, same_outputs

# Output depth of each Inception module in the paper's Table 1.
PAPER_DEPTHS = {
    "3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512,
    "4d": 528, "4e": 832, "5a": 832, "5b": 1024,
}  # fmt: skip


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def _torchvision(**kwargs) -> nn.Module:
    return torchvision.models.googlenet(num_classes=10, init_weights=True, **kwargs)


def _ours_from_torchvision(reference: nn.Module, **kwargs) -> nn.Module:
    ours = cnnzoo.create_model("googlenet", num_classes=10, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper"])
def test_inception_depths_and_map_sizes_are_table_1(name: str):
    model = _meta(name).eval()
    seen = {}

    def record(block: str):
        def hook(module, inputs, output) -> None:
            seen[block] = output.shape[1:]

        return hook

    for block in PAPER_DEPTHS:
        model.get_submodule(f"inception{block}").register_forward_hook(record(block))
    model(torch.empty(1, 3, 224, 224, device="meta"))
    sides = {"3": 28, "4": 14, "5": 7}  # Table 1's output sizes at 224 px
    assert seen == {b: (d, sides[b[0]], sides[b[0]]) for b, d in PAPER_DEPTHS.items()}
    assert list(model.stage_map) == ["stem", "inception3", "inception4", "inception5"]


def test_aux_heads_match_torchvision_in_train_and_eval():
    torch.manual_seed(0)
    reference = _torchvision(aux_logits=True)
    ours = _ours_from_torchvision(reference, aux_logits=True)
    x = torch.randn(2, 3, 64, 64)
    # Same seed, same order of dropout draws (aux1, aux2, main): the same training outputs.
    torch.manual_seed(1)
    expected = reference.train()(x)
    torch.manual_seed(1)
    got = ours.train()(x)
    assert isinstance(got, GoogLeNetOutputs)
    assert got._fields == ("logits", "aux_logits2", "aux_logits1")
    for e, g in zip(expected, got, strict=True):
        assert g.shape == (2, 10)
        assert same_outputs(e, g)
    with torch.no_grad():
        assert same_outputs(reference.eval()(x), ours.eval()(x))
        # The heads alone, on one 4a/4d-shaped map, with dropout off.
        feats = torch.randn(2, 512, 14, 14)
        assert same_outputs(reference.aux1(feats), ours.aux1(feats))
        feats = torch.randn(2, 528, 14, 14)
        assert same_outputs(reference.aux2(feats), ours.aux2(feats))


def test_output_order_names_each_head():
    model = cnnzoo.create_model("googlenet", num_classes=5, aux_logits=True).train()
    heads = {}
    for name in ("aux1", "aux2"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, n=name: heads.setdefault(n, o)
        )
    out = model(torch.randn(2, 3, 32, 32))
    assert out.aux_logits1 is heads["aux1"] and out.aux_logits2 is heads["aux2"]
    assert out.logits.shape == (2, 5)


def test_one_tensor_in_eval_or_without_aux_heads():
    x = torch.randn(2, 3, 32, 32)
    with_aux = cnnzoo.create_model("googlenet", num_classes=5, aux_logits=True).eval()
    with torch.no_grad():
        out = with_aux(x)
        assert type(out) is torch.Tensor and out.shape == (2, 5)
        assert torch.equal(out, with_aux.forward_head(with_aux.forward_features(x)))
        plain = cnnzoo.create_model("googlenet", num_classes=5).train()
        assert type(plain(x)) is torch.Tensor


def test_torchvision_aux_checkpoint_needs_aux_heads():
    # Dropping the aux keys of a checkpoint is the weight loader's job; a strict load refuses.
    reference = _torchvision(aux_logits=True)
    ours = cnnzoo.create_model("googlenet", num_classes=10)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*aux1\.conv\.conv\.weight"):
        ours.load_state_dict(reference.state_dict(), strict=True)


def test_transform_input_matches_torchvision():
    torch.manual_seed(0)
    reference = _torchvision(aux_logits=False, transform_input=True).eval()
    ours = _ours_from_torchvision(reference, transform_input=True).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert same_outputs(reference(x), ours(x))
    # What conv1 sees: the ImageNet-normalised input mapped back to pixels, then to (p − 0.5)/0.5.
    seen = []
    ours.conv1.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        ours(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (x * std + mean - 0.5) / 0.5)


def test_transform_input_needs_rgb():
    with pytest.raises(InvalidArgumentError, match="transform_input"):
        _meta("googlenet", in_chans=1, transform_input=True)


def test_reset_classifier_resets_the_aux_heads_too():
    model = cnnzoo.create_model("googlenet", num_classes=10, aux_logits=True)
    old = model.aux1.fc2, model.aux2.fc2
    model.reset_classifier(3)
    assert model.aux1.fc2 is not old[0] and model.aux2.fc2 is not old[1]
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert [o.shape for o in out] == [(2, 3)] * 3


def test_torchvision_variant_constants():
    model = _meta("googlenet", aux_logits=True)
    kernels = {
        model.get_submodule(f"inception{b}").branch3[1].conv.kernel_size for b in PAPER_DEPTHS
    }
    assert kernels == {(3, 3)}  # torchvision's known "5×5" bug (pytorch/vision#906)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 0.001 for m in bns)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    pools = {n: m for n, m in model.named_children() if isinstance(m, nn.MaxPool2d)}
    assert {n: (m.kernel_size, m.stride, m.ceil_mode) for n, m in pools.items()} == {
        "maxpool1": (3, 2, True),
        "maxpool2": (3, 2, True),
        "maxpool3": (3, 2, True),
        "maxpool4": (2, 2, True),
    }
    assert (model.dropout.p, model.aux1.dropout.p, model.aux2.dropout.p) == (0.2, 0.7, 0.7)


def test_paper_variant_layers():
    model = _meta("googlenet_paper", aux_logits=True)
    for block in PAPER_DEPTHS:
        conv = model.get_submodule(f"inception{block}").branch3[1].conv
        assert (conv.kernel_size, conv.padding) == ((5, 5), (2, 2))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    # Figure 3: LRN after the first max-pool and after the 3×3 convolution.
    assert model.stage_map["stem"] == [
        "conv1", "maxpool1", "lrn1", "conv2", "conv3", "lrn2", "maxpool2",
    ]  # fmt: skip
    pools = [m for m in model.children() if isinstance(m, nn.MaxPool2d)]
    assert [(m.kernel_size, m.stride) for m in pools] == [(3, 2)] * 4
    assert (model.dropout.p, model.aux1.dropout.p, model.aux2.dropout.p) == (0.4, 0.7, 0.7)
    for aux in (model.aux1, model.aux2):
        assert (aux.pool.kernel_size, aux.pool.stride) == (5, 3)
        assert (aux.conv.conv.out_channels, aux.fc1.out_features) == (128, 1024)


# Table 1's columns for each Inception module: input depth (the previous row's output), map
# side, then #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj.
TABLE_1 = {
    "3a": (192, 28, 64, 96, 128, 16, 32, 32),
    "3b": (256, 28, 128, 128, 192, 32, 96, 64),
    "4a": (480, 14, 192, 96, 208, 16, 48, 64),
    "4b": (512, 14, 160, 112, 224, 24, 64, 64),
    "4c": (512, 14, 128, 128, 256, 24, 64, 64),
    "4d": (512, 14, 112, 144, 288, 32, 64, 64),
    "4e": (528, 14, 256, 160, 320, 32, 128, 128),
    "5a": (832, 7, 256, 160, 320, 32, 128, 128),
    "5b": (832, 7, 384, 192, 384, 48, 128, 128),
}


def _conv(chans: int, filters: int, kernel: int, side: int) -> tuple[int, int]:
    """(params, MACs) of a convolution with bias (the paper variant has no BatchNorm)."""
    return (kernel * kernel * chans + 1) * filters, side * side * kernel * kernel * chans * filters


def test_paper_variant_counts_by_hand_from_table_1():
    """The reference's googlenet_paper figures were computed by building it; here they are
    worked out from the paper: Table 1's layers (the stem's 7×7/2 conv of 64 at 112 px, 1×1
    reduce of 64 and 3×3 of 192 at 56 px, the modules above, a linear layer 1024 → 1000) and
    §5's auxiliary heads (on 4a and 4d: 1×1 conv of 128 on the 4×4 pooled map, fully connected
    2048 → 1024, linear → 1000). Table 1's own params column is not used: it does not follow
    from its filter columns in several rows (4c prints 463K where its filters make 498K, 5a
    1072K for 1018K), nor is its ops column, which we could not read as text."""
    parts = [_conv(3, 64, 7, 112), _conv(64, 64, 1, 56), _conv(64, 192, 3, 56)]
    for chans, side, n1, r3, n3, r5, n5, proj in TABLE_1.values():
        parts += [_conv(chans, n1, 1, side), _conv(chans, r3, 1, side), _conv(r3, n3, 3, side)]
        parts += [_conv(chans, r5, 1, side), _conv(r5, n5, 5, side), _conv(chans, proj, 1, side)]
    params = sum(p for p, _ in parts) + 1024 * 1000 + 1000
    macs = sum(m for _, m in parts) + 1024 * 1000
    aux = sum((c * 128 + 128) + (2048 * 1024 + 1024) + (1024 * 1000 + 1000) for c in (512, 528))

    reference = load_reference()["googlenet_paper"]
    assert (params, macs, params + aux) == (
        reference["params"], reference["macs"], reference["params_with_aux"],
    )  # fmt: skip
    assert count_params(_meta("googlenet_paper")) == params
    assert count_params(_meta("googlenet_paper", aux_logits=True)) == params + aux
    assert model_macs(_meta("googlenet_paper"), (3, 224, 224)) == macs
    # §1: "a computational budget of 1.5 billion multiply-adds at inference time" — the one
    # total the paper prints as text (a design target): 1.58 G is within a unit of its last digit.
    assert abs(macs / 1e9 - 1.5) < 0.1


def test_paper_lrn_is_caffes_formula():
    # b_i = a_i / (k + α/n · Σ a_j²)^β over n = 5 neighbouring channels, k = 1, α = 1e-4, β = 0.75.
    model = cnnzoo.create_model("googlenet_paper", num_classes=2)
    a = torch.randn(2, 7, 3, 3, dtype=torch.float64) * 40
    expected = torch.empty_like(a)
    for i in range(7):
        lo, hi = max(0, i - 2), min(6, i + 2)
        expected[:, i] = a[:, i] / (1.0 + 1e-4 / 5 * (a[:, lo : hi + 1] ** 2).sum(1)) ** 0.75
    for lrn in (model.lrn1, model.lrn2):
        torch.testing.assert_close(lrn(a), expected)


def test_paper_init_biases():
    model = cnnzoo.create_model("googlenet_paper", num_classes=2, aux_logits=True)
    assert torch.all(model.conv1.conv.bias == 0.2) and torch.all(model.aux1.fc1.bias == 0.2)
    for fc in (model.fc, model.aux1.fc2, model.aux2.fc2):
        assert torch.all(fc.bias == 0)


def test_paper_aux_heads_take_only_a_14_to_16_px_map():
    # conv1 (7×7/2, pad 3) gives ⌊(s+1)/2⌋; three 3×3/2 pools (rounding up) halve it, rounding
    # down, so 4a is ⌊⌊(s+1)/2⌋/8⌋ px; the 5×5/3 pool gives 4×4 only from 14-16 px: s = 223-270.
    model = _meta("googlenet_paper", aux_logits=True).train()
    for side in (223, 224, 270):
        out = model(torch.empty(2, 3, side, side, device="meta"))
        assert out.aux_logits1.shape == (2, 1000)
    for side in (222, 271):
        with pytest.raises(InputSizeError, match="aux_logits=False"):
            model(torch.empty(2, 3, side, side, device="meta"))
        # Without the heads (eval mode) any size from min_size works.
        assert model.eval()(torch.empty(1, 3, side, side, device="meta")).shape == (1, 1000)
        model.train()
    head = cnnzoo.create_model("googlenet_paper", num_classes=3, aux_logits=True).aux1.eval()
    assert head(torch.rand(1, 512, 16, 16)).shape == (1, 3)
    with pytest.raises(InputSizeError):
        head(torch.rand(1, 512, 13, 13))


def test_torchvision_aux_heads_take_any_size():
    model = _meta("googlenet", aux_logits=True).train()
    for side in (15, 64, 300):  # from min_size up: the heads pool adaptively to 4×4
        out = model(torch.empty(2, 3, side, side, device="meta"))
        assert [o.shape for o in out] == [(2, 1000)] * 3


@pytest.mark.parametrize("arg", ["dropout", "dropout_aux"])
@pytest.mark.parametrize("value", [1.0, -0.5])
def test_bad_dropout_is_rejected(arg: str, value: float):
    for name in ("googlenet", "googlenet_paper"):
        with pytest.raises(InvalidArgumentError, match=arg):
            _meta(name, **{arg: value})
