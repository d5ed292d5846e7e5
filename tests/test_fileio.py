"""Atomic writes and copies: what a later write or a missing hard-link feature must not break."""

from __future__ import annotations

import os

import pytest

from cnnzoo import fileio
from cnnzoo.fileio import atomic_copy, atomic_write_bytes


@pytest.mark.parametrize("links", [True, False])
def test_a_copy_keeps_its_content_when_the_source_is_rewritten(tmp_path, monkeypatch, links):
    if not links:  # a file system without hard links: the bytes are copied instead

        def refuse(*args):
            raise OSError("hard links not supported")

        monkeypatch.setattr(fileio.os, "link", refuse)
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    best.write_bytes(b"an older best")
    atomic_write_bytes(last, b"epoch 2")
    atomic_copy(last, best)
    assert best.read_bytes() == b"epoch 2"
    assert (os.stat(last).st_ino == os.stat(best).st_ino) is links  # linked: no bytes written
    atomic_write_bytes(last, b"epoch 3, worse")  # the trainer's next epoch replaces last.pt
    assert best.read_bytes() == b"epoch 2" and last.read_bytes() == b"epoch 3, worse"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporaries
