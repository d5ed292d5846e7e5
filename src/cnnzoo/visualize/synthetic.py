"""A task where the answer is known, to show that the pictures mean something.

Each image is noise with one bright shape at a random place, a filled square (class 0) or a
cross (class 1): the class is the shape, so the evidence for it is inside the shape's
bounding box and nowhere else. A small CNN trained on it should have its class activation map
peak inside the box; a randomly initialised copy should not (the model-randomisation check of
Adebayo et al. 2018, "Sanity Checks for Saliency Maps": a map that does not change when the
weights are randomised explains the image, not the model). ``docs/visualize.md`` reports the
experiment, ``tests/test_visualize.py`` checks it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

CLASSES = ("square", "cross", "nothing")


class Shapes(NamedTuple):
    """``images`` ``(N, 1, S, S)``, ``labels`` ``(N,)`` (0 square, 1 cross, 2 nothing), ``boxes``
    ``(N, 4)`` as ``(top, left, bottom, right)``, bottom and right exclusive (an empty box for
    "nothing")."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


def shapes_dataset(
    count: int, *, size: int = 32, shape: int = 9, seed: int = 0, empty: bool = True
) -> Shapes:
    """``count`` images of ``size``² pixels on Gaussian noise (σ 0.3), seeded: squares and
    crosses of side ``shape`` at random places, and with ``empty`` a third of noise alone.

    Why the third class: with two shapes alone a network may learn one of them and call the
    other "no cross": its evidence for "square" is then the absence of something, which no
    map can point at (in a first try every square's Grad-CAM map was zero). With "nothing"
    to tell apart, each shape needs evidence of its own. The checks use shape images only.
    """
    gen = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.randn(count, 1, size, size, generator=gen)
    labels = torch.arange(count) % (3 if empty else 2)
    tops = torch.randint(0, size - shape + 1, (count,), generator=gen)
    lefts = torch.randint(0, size - shape + 1, (count,), generator=gen)
    arm = shape // 3  # the cross's bar is a third of its side wide
    mid = (shape - arm) // 2
    for i in range(count):
        top, left = int(tops[i]), int(lefts[i])
        patch = images[i, 0, top : top + shape, left : left + shape]
        if labels[i] == 2:
            tops[i] = lefts[i] = -shape  # no box: nothing can be inside it
        elif labels[i] == 0:
            patch += 1.0
        else:
            patch[mid : mid + arm, :] += 1.0
            patch[:, mid : mid + arm] += 1.0
            patch[mid : mid + arm, mid : mid + arm] -= 1.0  # the centre is brightened once
    boxes = torch.stack([tops, lefts, tops + shape, lefts + shape], dim=1)
    return Shapes(images, labels, boxes)


class TinyCNN(nn.Module):
    """Three 3×3 convolutions (8, 16, 32 channels; two 2×2 max-pools), global average pooling
    and a linear classifier: 6.3k parameters. ``features.6`` (the last ReLU, an 8×8 map at
    32 px) is where its class activation maps are computed."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 32, H/4, W/4)
        return self.classifier(x.mean(dim=(2, 3)))


CAM_LAYER = "features.6"


def train_tiny(data: Shapes, *, epochs: int = 4, seed: int = 0, batch_size: int = 64) -> TinyCNN:
    """A :class:`TinyCNN` trained on ``data`` with Adam (learning rate 3e-3), seeded."""
    torch.manual_seed(seed)
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(data.labels), generator=gen)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(data.images[batch]), data.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, data: Shapes) -> float:
    """Top-1 accuracy on ``data``."""
    with torch.no_grad():
        return (model(data.images).argmax(1) == data.labels).float().mean().item()


def peak_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """For each map ``(N, H, W)``, whether its maximum lies inside the image's box (a map
    with several equal maxima counts its first, in reading order)."""
    width = maps.shape[-1]
    flat = maps.flatten(1).argmax(dim=1)
    rows, cols = flat // width, flat % width
    top, left, bottom, right = boxes.unbind(dim=1)
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
