"""Omniglot class splits: which (character, rotation) classes each split may draw tasks from.

The splits are data, not code: ``metabench/protocols/omniglot_splits.json`` lists the characters of
every split of every scheme, and a manifest (the ordered class list) is hashed with sha256 so that a
score can be traced to the exact classes it was measured on.

Schemes
-------
``vinyals`` (default)
    ``numpy.random.RandomState(0).permutation(1623)``: first 1100 characters train, next 100 val,
    last 423 test, irrespective of alphabet (the MAML and Reptile protocol). Each character's four
    90-degree rotations are distinct classes (4400 / 400 / 1692 classes).
``lake``
    The official split: background alphabets for training (850 characters) and validation (the
    whole alphabets from Sanskrit onwards, 114 characters), the 20 evaluation alphabets (659
    characters) for test. No rotations.

Character ``c`` is row ``c`` of :func:`metabench.data.load_omniglot` (background rows first).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources

import torch

SCHEMES = ("vinyals", "lake")
SPLITS = ("train", "val", "test")


@cache
def _protocol() -> dict:
    text = resources.files("metabench").joinpath("protocols/omniglot_splits.json").read_text()
    return json.loads(text)


def _check(scheme: str, split: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def characters(scheme: str, split: str) -> list[int]:
    """Sorted character rows of one split."""
    _check(scheme, split)
    return list(_protocol()[scheme]["characters"][split])


def manifest(scheme: str, split: str) -> list[tuple[int, int]]:
    """The split's classes as ``(character, quarter_turns)`` pairs, in canonical order.

    ``quarter_turns`` ``k`` means the character image rotated by ``k * 90`` degrees
    counter-clockwise (``torch.rot90(image, k)``).
    """
    chars = characters(scheme, split)
    return [(c, r) for c in chars for r in _protocol()[scheme]["rotations"]]


def manifest_sha256(scheme: str, split: str) -> str:
    """sha256 of the manifest as compact JSON: the identity of a split's class list."""
    text = json.dumps(manifest(scheme, split), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def class_table(scheme: str, split: str) -> torch.Tensor:
    """The manifest as an int64 tensor of shape ``(n_classes, 2)``: columns character, rotation."""
    return torch.tensor(manifest(scheme, split), dtype=torch.int64)


def describe(scheme: str) -> str:
    """One-paragraph description of a scheme, for docs and ``metabench envs``."""
    _check(scheme, "train")
    return _protocol()[scheme]["description"]
