"""The named optimizers and learning-rate schedules of the trainer (see docs/optimizers.md).

Each optimizer name is one textbook algorithm built from ``torch.optim`` with torch's own update
rule; docs/optimizers.md writes each rule out and says where torch's form differs from the
textbook's. Two rules hold for every optimizer:

- weight decay never touches normalisation-layer parameters (BatchNorm, InstanceNorm, LayerNorm,
  GroupNorm, RMSNorm weights and biases) or any bias: shrinking a BN scale towards zero changes
  what the layer computes without regularising capacity, and a bias adds none to begin with;
- the classifier can have its own learning rate (``head_lr``), the usual transfer-learning recipe.

So an optimizer has up to four parameter groups, each named by its ``"name"`` key (torch keeps
extra keys in ``param_groups`` and in ``state_dict``): ``decay``, ``no_decay``, ``head_decay``,
``head_no_decay``. Empty groups are left out.

Schedulers are stepped once per optimisation step, not once per epoch: ``epochs`` and
``warmup_epochs`` are converted to steps with ``steps_per_epoch``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler

from cnnzoo.checks import check_int, check_number, did_you_mean
from cnnzoo.choices import OPTIMIZERS, SCHEDULES
from cnnzoo.errors import InvalidArgumentError

# Linear warmup starts at 1% of the base rate rather than 0: a first step of exactly 0 would be
# wasted, and LinearLR rejects a start factor of 0.
WARMUP_START_FACTOR = 0.01
# The step schedule multiplies the rate by STEP_GAMMA at these fractions of all training steps,
# the ResNet recipe (0.1 at 50% and 75% of training) expressed independently of the epoch count.
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1

# Modules whose parameters are never decayed; _NormBase covers BatchNorm*, SyncBatchNorm and
# InstanceNorm*.
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def _unknown(kind: str, name: object, choices: tuple[str, ...]) -> InvalidArgumentError:
    hint = did_you_mean(name, choices) or f" (choose one of {', '.join(choices)})"
    return InvalidArgumentError(f"unknown {kind} {name!r}{hint}.")


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters that weight decay must skip: norm-layer parameters and biases."""
    ids = set()
    for module in model.modules():
        for pname, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or pname == "bias":
                ids.add(id(param))
    return ids


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, head_lr: float | None
) -> list[dict]:
    """Split the trainable parameters of ``model`` into the named groups described above.

    Args:
        model: the network; ``head_lr`` needs a ``get_classifier()`` method (every ZooModel).
        lr: learning rate of the backbone groups.
        weight_decay: decay of the ``decay`` groups; the ``no_decay`` groups get 0.
        head_lr: learning rate of the classifier's groups, or None for one rate everywhere.

    Returns:
        Parameter-group dicts for ``torch.optim``, empty groups left out.
    """
    head_ids: set[int] = set()
    if head_lr is not None:
        get_classifier = getattr(model, "get_classifier", None)
        if not callable(get_classifier):
            raise InvalidArgumentError(
                f"head_lr needs a model with get_classifier(), and {type(model).__name__} has "
                "none: build it with cnnzoo.create_model or leave head_lr unset."
            )
        head_ids = {id(p) for p in get_classifier().parameters()}
    no_decay = _no_decay_ids(model)

    buckets: dict[str, list[nn.Parameter]] = {
        "decay": [],
        "no_decay": [],
        "head_decay": [],
        "head_no_decay": [],
    }
    # model.parameters() yields each shared (tied) parameter once, so none lands in two groups.
    for param in model.parameters():
        if not param.requires_grad:
            continue
        prefix = "head_" if id(param) in head_ids else ""
        suffix = "no_decay" if id(param) in no_decay else "decay"
        buckets[prefix + suffix].append(param)

    groups = []
    for name, params in buckets.items():
        if params:
            groups.append(
                {
                    "name": name,
                    "params": params,
                    "lr": head_lr if name.startswith("head_") else lr,
                    "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
                }
            )
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    head_lr: float | None = None,
) -> torch.optim.Optimizer:
    """Build one of the named optimizers over the trainable parameters of ``model``.

    ``sgd`` is plain gradient descent (no momentum); ``momentum`` is heavy ball (torch SGD,
    dampening 0); ``nesterov`` is NAG in Sutskever et al.'s reparameterised form (torch SGD,
    ``nesterov=True``); ``adagrad``, ``rmsprop`` (smoothing ``alpha=0.99``, ``eps=1e-8`` added
    *outside* the square root, unlike TensorFlow; no momentum), ``adam`` (bias-corrected) and
    ``adamw`` (decoupled decay) use torch's defaults for everything but the arguments below.
    For every optimizer but ``adamw`` weight decay is the L2 term added to the gradient.

    Args:
        model: the network. Parameters with ``requires_grad=False`` are left out.
        name: one of :data:`OPTIMIZERS`.
        lr: learning rate (> 0).
        momentum: momentum coefficient in [0, 1), used by ``momentum`` and ``nesterov`` only.
        weight_decay: decay coefficient (>= 0), never applied to norm-layer parameters or biases.
        head_lr: a separate learning rate (> 0) for ``model.get_classifier()``'s parameters.

    Returns:
        The optimizer, with up to four named parameter groups (see the module docstring).

    Raises:
        InvalidArgumentError: an unknown name (close matches suggested), a number out of range,
            ``head_lr`` for a model without ``get_classifier()``, or no trainable parameter.
    """
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    check_number("lr", lr, low=0, above=True)
    check_number("momentum", momentum, low=0, below=1)
    check_number("weight_decay", weight_decay, low=0)
    if head_lr is not None:
        check_number("head_lr", head_lr, low=0, above=True)
    if name == "nesterov" and momentum == 0:
        # torch refuses nesterov with zero momentum; say it in the project's words.
        raise InvalidArgumentError("the nesterov optimizer needs momentum > 0, got 0.")

    groups = param_groups(model, lr=lr, weight_decay=weight_decay, head_lr=head_lr)
    if not groups:
        raise InvalidArgumentError(
            f"{type(model).__name__} has no trainable parameters: unfreeze some before training."
        )

    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.0)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.0)
    if name == "nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.0, nesterov=True)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr)
    # torch's default on the CPU is a Python loop over the tensors (its multi-tensor path is
    # for GPUs); the fused kernel makes one pass: VGG-11-BN's AdamW step (129M parameters) took
    # 0.28 s against 2.1 s, AlexNet's 0.09 against 0.63 (docs/benchmarks.md). The same update
    # rule; only the order of rounding differs.
    fused = _fusable(groups)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def _fusable(groups: list[dict]) -> bool | None:
    """Whether torch's fused Adam kernel takes every parameter (floating point, on the CPU or a
    CUDA device); ``None`` leaves the choice to torch."""
    params = [p for g in groups for p in g["params"]]
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


def _constant(step: int) -> float:
    # A named function, not a lambda: LambdaLR leaves functions out of its state_dict, so the
    # checkpoint stays plain data either way, but a name reads better in a traceback.
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
) -> lr_scheduler.LRScheduler:
    """Build one of the named learning-rate schedules, to be stepped once per optimisation step.

    Call ``scheduler.step()`` after every ``optimizer.step()``; the rate of step ``k`` (from 0)
    is then the schedule's value at ``k``. With ``T = epochs * steps_per_epoch`` steps:

    - ``constant``: the optimizer's rate throughout;
    - ``step``: ×0.1 from step ``round(0.5 T)`` and again from ``round(0.75 T)``, counted from
      the first step of training (warmup included);
    - ``cosine``: half a cosine from the base rate down to 0, reached after the last step;
    - ``onecycle``: torch's OneCycleLR with ``max_lr`` = each group's rate (so a head group keeps
      its own peak), 30% warm-up from ``max_lr / 25``, cosine annealing to ``max_lr / 25e4``
      after the last step; momentum is not cycled, so the optimizer stays the one named.

    ``warmup_epochs > 0`` prepends a linear warmup from 1% of each group's rate to the full rate
    over ``round(warmup_epochs * steps_per_epoch)`` steps (SequentialLR); the schedule then runs
    over the remaining steps. onecycle has its own warm-up and takes none.

    To resume, build the optimizer and the scheduler as for a fresh run, then load the
    optimizer's state_dict and then the scheduler's: the rates continue exactly.

    Args:
        optimizer: from :func:`build_optimizer` (or any torch optimizer).
        name: one of :data:`SCHEDULES`.
        epochs: number of epochs (>= 1).
        steps_per_epoch: optimisation steps per epoch (>= 1).
        warmup_epochs: epochs of linear warmup (>= 0, may be fractional).

    Returns:
        The scheduler; its state_dict is plain data (loads with ``weights_only=True``).

    Raises:
        InvalidArgumentError: an unknown name, a count out of range, or a warmup that is
            longer than the schedule allows.
    """
    if name not in SCHEDULES:
        raise _unknown("schedule", name, SCHEDULES)
    total = check_int("epochs", epochs) * check_int("steps_per_epoch", steps_per_epoch)
    check_number("warmup_epochs", warmup_epochs, low=0)
    warmup = round(warmup_epochs * steps_per_epoch)
    _check_warmup(name, warmup, total, warmup_epochs, epochs)
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            # One more than the steps taken: OneCycleLR ends its curve at step total_steps - 1,
            # and the scheduler is stepped after the last optimiser step too. Like cosine, the
            # minimum is then the value after the last step instead of the last step's rate.
            total_steps=total + 1,
            cycle_momentum=False,
        )
    main: lr_scheduler.LRScheduler
    if name == "constant":
        main = lr_scheduler.LambdaLR(optimizer, _constant)
    elif name == "step":
        drops = [round(f * total) - warmup for f in STEP_MILESTONES]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=drops, gamma=STEP_GAMMA)
    else:  # cosine
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.0)
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(
        optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup
    )
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _check_warmup(name: str, warmup: int, total: int, warmup_epochs: float, epochs: int) -> None:
    """A warm-up of ``warmup`` steps must fit the schedule (onecycle has its own)."""
    if name == "onecycle" and warmup_epochs > 0:
        raise InvalidArgumentError(
            "the onecycle schedule has its own warm-up: leave warmup_epochs at 0."
        )
    if warmup >= total:
        raise InvalidArgumentError(
            f"warmup_epochs={warmup_epochs!r} covers the whole run of {epochs} epochs: "
            "make it shorter."
        )
    if name == "step" and warmup >= round(STEP_MILESTONES[0] * total):
        raise InvalidArgumentError(
            f"warmup_epochs={warmup_epochs!r} does not end before the step schedule's first drop "
            "at 50% of training: make it less than half of epochs."
        )
