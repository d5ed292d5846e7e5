"""BatchNorm folded into the convolution before it (eval mode only).

In eval mode a BatchNorm is a fixed per-channel affine map, so after a convolution it can be
merged into that convolution's weight and bias:

    s = γ / √(σ² + ε),  w' = w · s (per output channel),  b' = (b − μ) · s + β

which saves one pass over the feature map per pair. Which BatchNorm follows which convolution is
read from the graph that ``torch.export`` traces (an fx graph of aten ops whose nodes name the
module that ran them): plain ``torch.fx.symbolic_trace`` fails on half the zoo, whose forwards
check input shapes (LeNet-5, the MLP, ResNet-20's option-A shortcut) or slice a Sequential
(VGG). The folding itself is done on a copy of the modules (``torch.nn.utils.fusion``), each
folded BatchNorm replaced by ``nn.Identity``, so the copy runs its own Python forward with its
shape checks and any batch size; the user's model is never touched.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cnnzoo.errors import InvalidArgumentError

_CONV_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
_BN_OPS = (
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
)


def fold_batchnorm(
    model: nn.Module, example_input: torch.Tensor, name: str | None = None
) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``model`` in eval mode with every foldable BatchNorm folded into its conv.

    A pair is folded only when nothing else can tell: the BatchNorm (``nn.BatchNorm2d`` with
    running statistics, its own forward) reads the output of a plain ``nn.Conv2d`` whose weight
    is the parameter itself (not e.g. LeNet-5's masked weight), that output feeds nothing else,
    and each module runs once per forward.

    Args:
        model: the network; left as it is.
        example_input: a batch ``(N, C, H, W)`` to trace with (any batch size).
        name: what to call the model in errors (its class name when ``None``).

    Returns:
        ``(folded copy, [(conv path, batchnorm path), ...])``.

    Raises:
        InvalidArgumentError: ``torch.export`` cannot trace the model (one line, with its
            reason); choose a backend that does not fold.
    """
    name = name or type(model).__name__
    folded = copy.deepcopy(model).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export's own chatter; a failure still raises
            program = torch.export.export(folded, (example_input,), strict=False)
    except Exception as err:  # the exporter's error types vary; the cause stays chained
        reason = (str(err).strip() or type(err).__name__).splitlines()[0][:200]
        raise InvalidArgumentError(
            f"backend 'fused' cannot fold BatchNorm in {name}: torch.export could not trace it "
            f"({reason}); choose eager or channels_last."
        ) from err
    pairs = _foldable_pairs(program, folded)
    for conv_path, bn_path in pairs:
        conv, bn = folded.get_submodule(conv_path), folded.get_submodule(bn_path)
        # _foldable_pairs keeps only pairs that _plain found to be torch's Conv2d and BatchNorm2d.
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        folded.set_submodule(conv_path, fuse_conv_bn_eval(conv, bn))
        folded.set_submodule(bn_path, nn.Identity())
    return folded, pairs


def _foldable_pairs(program: torch.export.ExportedProgram, model: nn.Module) -> list[tuple]:
    signature = program.graph_signature
    owner = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}  # input → FQN
    nodes = list(program.graph.nodes)
    calls: dict[str, int] = {}  # module path → how many aten calls ran inside it directly
    for node in nodes:
        if node.op == "call_function" and node.target in _CONV_OPS + _BN_OPS:
            calls[_innermost(node)] = calls.get(_innermost(node), 0) + 1
    pairs = []
    for node in nodes:
        if node.op != "call_function" or node.target not in _BN_OPS:
            continue
        conv_node = node.args[0]
        if (
            not isinstance(conv_node, torch.fx.Node)
            or conv_node.target not in _CONV_OPS
            or len(conv_node.users) != 1  # the unnormalised output is read elsewhere too
        ):
            continue
        weight, mean = conv_node.args[1], node.args[3]
        if not (isinstance(weight, torch.fx.Node) and isinstance(mean, torch.fx.Node)):
            continue
        if len(weight.users) != 1 or len(mean.users) != 1:  # tensors shared with other calls
            continue
        conv_path = owner.get(weight.name, "").rpartition(".")[0]
        bn_path = owner.get(mean.name, "").rpartition(".")[0]
        if not (
            conv_path
            and bn_path
            and owner[weight.name] == f"{conv_path}.weight"
            and owner[mean.name] == f"{bn_path}.running_mean"
            # The aten calls ran inside those very modules, once each: a module called twice,
            # or a functional call on another module's tensors, is not folded.
            and _innermost(conv_node) == conv_path
            and _innermost(node) == bn_path
            and calls.get(conv_path) == 1
            and calls.get(bn_path) == 1
            and _plain(model.get_submodule(conv_path), model.get_submodule(bn_path))
        ):
            continue
        pairs.append((conv_path, bn_path))
    return pairs


def _innermost(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _plain(conv: nn.Module, bn: nn.Module) -> bool:
    """A convolution and a BatchNorm whose forwards are torch's own."""
    return (
        isinstance(conv, nn.Conv2d)
        and type(conv).forward is nn.Conv2d.forward
        and type(conv)._conv_forward is nn.Conv2d._conv_forward
        and isinstance(bn, nn.BatchNorm2d)
        and type(bn).forward is nn.BatchNorm2d.forward
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )
