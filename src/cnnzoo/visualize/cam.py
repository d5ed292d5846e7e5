"""Class activation maps: which part of the image decided a class.

The maps are computed by pytorch-grad-cam (PyPI ``grad-cam``, the ``visualize`` extra), the
maintained library with all three methods offered here:

- ``"gradcam"`` (Selvaraju et al. 2017): each channel k of the layer's maps ``A`` weighted by
  the mean over positions of ``∂y_c/∂A_k``, summed over channels, ReLU;
- ``"gradcam++"`` (Chattopadhay et al. 2018): the weights from positive gradients only, each
  position weighted by second- and third-order terms, which helps with several instances;
- ``"scorecam"`` (Wang et al. 2020): no gradients; each channel, upsampled and scaled to
  [0, 1], masks the input, and the class score of the masked input weights that channel. One
  forward pass per channel: minutes for a 2048-channel layer on a CPU.

Every map is upsampled bilinearly to the input's size and scaled to [0, 1] per image (the
library's ``scale_cam_image``): a map shows where, not how much. The model is left as it was
found: modes, ``requires_grad``, ``.grad`` and hooks (``tests/test_visualize.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnzoo.checks import check_choice, is_int
from cnnzoo.errors import InvalidArgumentError
from cnnzoo.visualize.maps import as_batch, model_name, resolve_layers, stage_layers, untouched

CAM_METHODS = ("gradcam", "gradcam++", "scorecam")


def _output_shapes(
    model: nn.Module, input_size: tuple[int, ...], names: Sequence[str], calls: dict | None = None
) -> dict[str, tuple[int, ...]]:
    """The output shapes of ``names`` (and under ``""``, the model's) for one input of
    ``input_size``, from a pass on the meta device: no arithmetic, the model's own tensors
    untouched. ``calls`` counts the calls of each name."""
    calls = {} if calls is None else calls
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                calls[name] = calls.get(name, 0) + 1
                shapes[name] = tuple(output.shape)

        return hook

    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    handles = [model.get_submodule(n).register_forward_hook(keep(n)) for n in dict.fromkeys(names)]
    try:
        with untouched(model), torch.no_grad():
            model.eval()
            x = torch.empty(1, *input_size, device="meta")
            keep("")(model, (x,), torch.func.functional_call(model, meta, (x,), strict=False))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _default_layer(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> str | None:
    for name in reversed(list(stage_layers(model).values())):
        shape = shapes.get(name, ())
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            return name
    return None


def default_cam_layer(model: nn.Module, input_size: tuple[int, ...]) -> str:
    """The layer a class activation map is computed on when none is named: the end of the
    last stage of the model's ``stage_map`` whose output is still a spatial map larger than
    1×1 at ``input_size``. That is the last convolutional stage (ResNet's ``layer4``, VGG's
    and AlexNet's last pool, MobileNet's and EfficientNet's last 1×1 convolution), GoogLeNet's
    last Inception block, DenseNet's final BatchNorm (``features.norm5``), and LeNet-5's
    ``s4`` (its ``c5`` is a 1×1 map: a fully-connected layer in all but name).

    Raises:
        InvalidArgumentError: no stage gives a spatial map (the MLP).
    """
    shapes = _output_shapes(model, input_size, list(stage_layers(model).values()))
    layer = _default_layer(model, shapes)
    if layer is None:
        raise _no_spatial_layer(model, input_size)
    return layer


def _no_spatial_layer(model: nn.Module, input_size: tuple[int, ...]) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{model_name(model)} has no layer with a spatial map at input "
        f"{'×'.join(map(str, input_size))}: a class activation map needs a convolutional layer."
    )


def _targets(target: int | Sequence[int], count: int, num_classes: int) -> list[int]:
    wanted = [target] * count if is_int(target) else list(target)  # type: ignore[arg-type]
    if len(wanted) != count:
        raise InvalidArgumentError(
            f"target has {len(wanted)} classes for {count} images; give one per image or one "
            f"for all."
        )
    for k in wanted:
        if not is_int(k) or not 0 <= k < num_classes:
            raise InvalidArgumentError(
                f"class index {k!r} is out of range: the model has {num_classes} classes, "
                f"0 to {num_classes - 1}."
            )
    return wanted


def class_activation_map(
    model: nn.Module,
    images: torch.Tensor,
    target: int | Sequence[int] | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> torch.Tensor:
    """Where in each image the evidence for a class is, as a map over the image.

    Args:
        model: a classifier; left as it was found (modes, ``requires_grad``, ``.grad``, hooks).
        images: ``(N, C, H, W)`` or ``(C, H, W)``, prepared as the model sees them.
        target: the class of every image (an int), one per image (a sequence), or ``None``
            for each image's most probable class.
        layer: the module path whose maps are weighted; ``None``: :func:`default_cam_layer`.
        method: ``"gradcam"``, ``"gradcam++"`` or ``"scorecam"`` (module docstring).

    Returns:
        ``(N, H, W)`` float32 on the CPU, each image's map in [0, 1] at the input's size.

    Raises:
        InvalidArgumentError: an unknown method or layer, a layer without a spatial map, or a
            class index out of range.
        ExportError: the ``visualize`` extra (grad-cam) is not installed.
    """
    check_choice("method", method, CAM_METHODS)
    x = as_batch(images, model)
    size = tuple(x.shape[1:])
    names = list(stage_layers(model).values())
    if layer is not None:
        names.append(resolve_layers(model, [layer])[0])
    calls: dict[str, int] = {}
    shapes = _output_shapes(model, size, names, calls)
    layer = layer if layer is not None else _default_layer(model, shapes)
    if layer is None:
        raise _no_spatial_layer(model, size)
    num_classes = shapes.get("", (0, 0))[-1]  # the logits' width
    classes = None if target is None else _targets(target, len(x), num_classes)
    shape = shapes.get(layer, ())
    if len(shape) != 4:
        raise InvalidArgumentError(
            f"layer {layer!r} gives {tuple(shape)}, not a spatial map; pick a convolutional "
            f"layer (or leave the layer out for the default)."
        )
    if calls.get(layer, 0) > 1:
        raise InvalidArgumentError(
            f"layer {layer!r} runs {calls[layer]} times in one pass (a module shared within a "
            f"block): its maps are not one layer's; pick the block or another layer."
        )
    from cnnzoo.extras import require

    (cams,) = require("pytorch_grad_cam", needed_by="a class activation map")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "scorecam": cams.ScoreCAM}
    module = model.get_submodule(layer)
    with untouched(model):
        model.eval()
        # No weight needs a gradient (nothing accumulates in .grad), and the layer's output
        # is made the start of the graph: backward runs through the layers above it only
        # (the head, for the default layer) instead of the whole network, with the same
        # ∂y_c/∂A. Registered first, so the library's hooks see the new tensor.
        for p in model.parameters():
            p.requires_grad_(False)
        handle = module.register_forward_hook(_graph_starts_here, prepend=True)
        try:
            cam = kind[method](model, [module])
            try:
                with torch.enable_grad():
                    # No classes: the library takes each image's most probable one.
                    chosen = (
                        None if classes is None else [ClassifierOutputTarget(k) for k in classes]
                    )
                    maps = cam(x, chosen)
            finally:
                cam.activations_and_grads.release()  # its hooks; never left on the model
        finally:
            handle.remove()
    return torch.from_numpy(maps).float()


def _graph_starts_here(module: nn.Module, inputs: tuple, output: object) -> object:
    if not isinstance(output, torch.Tensor):
        return output
    # A copy of a new leaf: layers after it may work in place (on the copy), not on a leaf.
    return output.detach().requires_grad_().clone()
