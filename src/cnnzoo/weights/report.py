"""The report every load returns: what was loaded, left out, replaced and adapted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadReport:
    """What a load did. Keys are the model's state_dict keys.

    Attributes:
        path: the file read.
        model: the registry name loaded into.
        source: the kind of file (``"cnnzoo export"``, ``"torchvision"``, ``"timm"``, ...).
        loaded: keys set from the file.
        missing: keys the model has and the file lacks (left at their initialisation).
        unexpected: keys in the file that the model has no place for (not loaded).
        shape_mismatched: ``"key: file (…) vs model (…)"`` for tensors that could not load.
        reinitialised: keys freshly initialised instead of loaded (a replaced head, missing aux).
        notes: every adaptation made, one sentence each (prefixes, renamed keys, channel rule).
        strict: whether ``load_state_dict(strict=True)`` was used.
    """

    path: str
    model: str
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strict: bool = True

    @property
    def complete(self) -> bool:
        """True when every tensor of the model came from the file unchanged in role."""
        return not (self.missing or self.unexpected or self.shape_mismatched or self.reinitialised)

    def lines(self) -> list[str]:
        """The report as printable lines."""
        how = "strict" if self.strict else "non-strict, every difference listed"
        out = [
            f"weights {self.path} ({self.source}) → {self.model}: "
            f"{len(self.loaded)} tensors loaded ({how})"
        ]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected (not loaded)", self.unexpected),
            ("shape-mismatched", self.shape_mismatched),
            ("re-initialised", self.reinitialised),
        ):
            if keys:
                out.append(f"  {label}: {len(keys)}: {few(keys, 6)}")
        out.extend(f"  note: {note}" for note in self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def few(items: list[str], n: int) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", … (+{len(items) - n})" if len(items) > n else "")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
