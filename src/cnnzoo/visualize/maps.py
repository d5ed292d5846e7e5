"""What a network computes inside, as tensors: feature maps of named layers and the first
layer's filters. Drawing is kept apart (:mod:`cnnzoo.visualize.draw`), so that a web page or a
notebook can use the same numbers.

Layer names are module paths, as the analyzer's rows name them (``cnnzoo summary``): the
leaves (``layer1.0.conv1``, ``features.3``) and, for a whole stage or block, the container
(``layer1``, ``inception5b``). A module called more than once in a forward pass (a ResNet
block's shared ReLU) gives the output of its last call, the last row of that name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from cnnzoo.checks import did_you_mean
from cnnzoo.errors import InvalidArgumentError


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Leave ``model`` as it was found: every module's train/eval flag, every parameter's
    ``requires_grad`` and ``.grad``. Hooks are the caller's to remove (in its own ``finally``)."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def model_name(model: nn.Module) -> str:
    """The registry name when the model was loaded from weights, else its class name."""
    return type(model).__name__


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """``layers`` checked against the model's module paths, in the order given, once each.

    Raises:
        InvalidArgumentError: a name the model does not have; the message lists the close ones.
    """
    modules = dict(model.named_modules())
    names: list[str] = []
    for name in layers:
        if not isinstance(name, str) or name not in modules or name == "":
            hint = did_you_mean(name, [n for n in modules if n])
            raise InvalidArgumentError(
                f"{model_name(model)} has no layer {name!r}{hint}; `cnnzoo summary` lists its "
                f"layers by name."
            )
        if name not in names:
            names.append(name)
    return names


def stage_layers(model: nn.Module) -> dict[str, str]:
    """The end of every stage, ``{stage label: module path}``, from the input on: the last
    module of each entry of the model's ``stage_map`` (a model without one: its top-level
    children)."""
    stage_map = getattr(model, "stage_map", None)
    if stage_map:
        return {label: paths[-1] for label, paths in stage_map.items()}
    return {name: name for name, _ in model.named_children()}


def as_batch(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``images`` as a float ``(N, C, H, W)`` batch on the model's device and dtype (one
    ``(C, H, W)`` image becomes a batch of one).

    Raises:
        InvalidArgumentError: not a 3-D or 4-D tensor.
    """
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidArgumentError(
            f"images must be a tensor (N, C, H, W) or (C, H, W) as the model sees them, got "
            f"{shape}; prepare files with model.pretrained_cfg.prepare(image)."
        )
    x = images if images.dim() == 4 else images.unsqueeze(0)
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point():
        return x.to(param.device, param.dtype)
    return x.float()


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((t for t in output if isinstance(t, torch.Tensor)), None)
    return None


def run_with_maps(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass in eval mode without gradients: the logits and the outputs of
    ``layers`` (already checked by :func:`resolve_layers`), each ``(N, ...)`` on the CPU.

    Raises:
        InvalidArgumentError: a layer that does not run in eval mode (an auxiliary head).
    """
    x = as_batch(images, model)
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is not None:
                # A copy: an in-place activation after this layer would change the tensor.
                outputs[name] = tensor.detach().float().cpu().clone()

        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in layers]
    try:
        with untouched(model), torch.no_grad():
            model.eval()
            logits = _first_tensor(model(x))
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in layers if name not in outputs]
    if missing:
        raise InvalidArgumentError(
            f"layer {missing[0]!r} of {model_name(model)} does not run in eval mode (an "
            f"auxiliary head?); pick a layer of the main path."
        )
    assert logits is not None  # every zoo model returns a tensor of logits in eval mode
    return logits.detach().float().cpu(), outputs


def feature_maps(
    model: nn.Module, images: torch.Tensor, layers: Iterable[str]
) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for ``images``, in one forward pass in eval mode.

    Args:
        model: any module; it is left as it was (modes, ``requires_grad``, no hooks).
        images: ``(N, C, H, W)`` or ``(C, H, W)``, prepared as the model sees them.
        layers: module paths, as the analyzer's rows name them (see the module docstring).

    Returns:
        ``{layer: tensor}`` in the order given, each on the CPU in float32, of the analyzer's
        output shape for that layer: ``(N, C, H, W)`` for a convolutional layer, ``(N, F)`` for
        a linear one.

    Raises:
        InvalidArgumentError: an unknown layer (close names listed), or one that does not run.
    """
    names = resolve_layers(model, layers)
    return run_with_maps(model, images, names)[1]


def filter_layer(model: nn.Module) -> str:
    """The module path of the first convolution (or, in a network without one, the first
    linear layer), whose weights :func:`filters` returns.

    Raises:
        InvalidArgumentError: the model has neither.
    """
    first_linear = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
        if first_linear is None and isinstance(module, nn.Linear):
            first_linear = name
    if first_linear is None:
        raise InvalidArgumentError(f"{model_name(model)} has no convolution or linear layer.")
    return first_linear


def filters(model: nn.Module) -> torch.Tensor:
    """The first layer's filters as images, ``(K, C, kH, kW)``, a float32 copy on the CPU.

    For a network that starts with a convolution these are its weights as they are. A
    network without one (the MLP) has each first-layer unit's weights laid out as the input
    image they multiply, ``(K, C, H, W)``, read from its ``input_shape``.
    """
    module = model.get_submodule(filter_layer(model))
    assert isinstance(module, (nn.Conv2d, nn.Linear))  # what filter_layer finds
    weight = module.weight.detach().float().cpu().clone()
    if isinstance(module, nn.Linear):
        shape = tuple(getattr(model, "input_shape", ()))
        if len(shape) != 3 or weight.shape[1] != shape[0] * shape[1] * shape[2]:
            return weight[:, None, None, :]  # (K, 1, 1, F): a row of weights per unit
        return weight.reshape(weight.shape[0], *shape)
    return weight
