"""The model contract shared by every family (DESIGN.md §3).

Each family's network subclasses :class:`ZooModel`, defines ``forward_features`` (image to the
last feature map) and ``forward_head`` (feature map to logits, or to the vector the classifier
reads when ``pre_logits=True``), and sets three attributes in ``__init__``:

- ``classifier_name``: dotted path of the final ``nn.Linear`` that produces the logits;
- ``num_features``: the width of the vector that classifier reads;
- ``stage_map``: the backbone's stages from input to output, each a label and the module paths
  it owns (``{"stem": ["conv1", "bn1"], "layer1": ["layer1"], ...}``): the units of freezing.

Everything else a transfer-learning user needs (``get_classifier``, ``reset_classifier``) is
derived here once, so no family needs code of its own for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    # For the annotation only: models import nothing of data when they run.
    from cnnzoo.data.preprocessing import Preprocessing


class ZooModel(nn.Module):
    """Base class of every registered network."""

    classifier_name: str
    num_features: int
    num_classes: int
    stage_map: dict[str, list[str]]
    # Set by cnnzoo.weights.load_weights (the preparation the weights expect); a model built
    # with random weights has none, hence getattr(model, "pretrained_cfg", None) where either.
    pretrained_cfg: Preprocessing

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that maps ``num_features`` to ``num_classes`` logits."""
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one of ``num_classes`` outputs."""
        self.set_submodule(self.classifier_name, self._new_classifier(num_classes))
        self.num_classes = num_classes

    def _new_classifier(self, num_classes: int) -> nn.Linear:
        old = self.get_classifier()
        return nn.Linear(self.num_features, num_classes, device=old.weight.device)

    def freeze(self, what: str) -> list[str]:
        """Freeze ``"backbone"`` (every stage) or ``"stages:K"`` (the first K stages); ``"none"``
        freezes nothing. Frozen parameters stop requiring gradients, and frozen BatchNorm layers
        stay in eval mode (their running statistics fixed) even when the model trains.

        Returns:
            The labels of the frozen stages.

        Raises:
            InvalidArgumentError: ``what`` is not one of those forms, or K is out of range.
        """
        from cnnzoo.errors import InvalidArgumentError

        labels = list(self.stage_map)
        if what == "none":
            count = 0
        elif what == "backbone":
            count = len(labels)
        elif what.startswith("stages:") and what[7:].isdigit():
            count = int(what[7:])
            if not 1 <= count <= len(labels):
                raise InvalidArgumentError(
                    f"--freeze {what}: {type(self).__name__} has {len(labels)} stages "
                    f"({', '.join(labels)}); choose K from 1 to {len(labels)}."
                )
        else:
            raise InvalidArgumentError(
                f"--freeze {what!r} is not none, backbone or stages:K (K a number of stages)."
            )
        for _, modules in self.stages()[:count]:
            for module in modules:
                module.requires_grad_(False)
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        # A plain flag, which train() reads back.
                        m.frozen = True  # type: ignore[assignment]  # nn.Module's stub: tensors/modules only
        self.train(self.training)
        return labels[:count]

    def train(self, mode: bool = True) -> ZooModel:
        super().train(mode)
        for m in self.modules():
            if getattr(m, "frozen", False):
                m.eval()  # a frozen BatchNorm keeps using (and keeping) its running statistics
        return self

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """The backbone stages in order from the input, as ``(label, modules)`` pairs."""
        return [
            (label, [self.get_submodule(path) for path in paths])
            for label, paths in self.stage_map.items()
        ]
