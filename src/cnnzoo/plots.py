"""Every figure in one place (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from cnnzoo.fileio import atomic_write_bytes


def _save(fig: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def training_curves(history: Sequence[dict], path: Path, title: str = "") -> None:
    """Loss and top-1 accuracy per epoch, training against validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["val_acc"] for h in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def confusion_matrix(
    confusion: torch.Tensor, class_names: Sequence[str], path: Path, title: str = ""
) -> None:
    """The confusion matrix normalised per true class (each row sums to 1)."""
    counts = confusion.double()
    rows = counts.sum(1, keepdim=True).clamp_min(1)
    norm = (counts / rows).numpy()
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), class_names)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if counts[i, j] > 0:
                        color = "white" if norm[i, j] > 0.5 else "black"
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                                color=color, fontsize=8)  # fmt: skip
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    _save(fig, path)
