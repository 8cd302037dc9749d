"""Omniglot class splits: which (character, rotation) classes each split may draw tasks from.

The splits are data, not code, shipped in ``metabench/protocols/``: a split's *manifest* is its
ordered list of ``(character, quarter_turns)`` classes, hashed with sha256 so that a score can be
traced to the exact classes it was measured on.

A scheme can have several *editions*; every edition an env version was ever registered with stays
installed, and a registered env pins its edition by the manifest hashes
(:func:`find_edition`), so old versions keep their meaning. Without a pin, an env gets the
:data:`CURRENT` edition.

Schemes
-------
``vinyals``
    ``v1`` (current): the Vinyals et al. (2016) split as distributed with Prototypical Networks and
    used by most published Omniglot numbers: 1028 / 172 / 423 characters (4112 / 688 / 1692 classes,
    each character's four 90-degree rotations being distinct classes), mostly whole alphabets,
    background and evaluation alphabets mixed. Listed in ``protocols/vinyals/{train,val,test}.txt``
    (``Alphabet/characterNN/rotDDD`` per line; MIT licence of its authors beside them) and mapped to
    data rows with ``protocols/omniglot_alphabets.csv``.
    ``v0`` (deprecated, env version 0): ``numpy.random.RandomState(0).permutation(1623)`` over
    characters, first 1100 train, next 100 val, last 423 test, irrespective of alphabet.
``lake``
    ``v0`` (the only edition): the official split, background alphabets for training (27 alphabets,
    850 characters) and validation (Sanskrit, Tagalog, Tifinagh: 114 characters), the 20 evaluation
    alphabets (659 characters) for test. No rotations.

Character ``c`` is row ``c`` of :func:`metabench.data.load_omniglot` (background rows first).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from functools import cache
from importlib import resources

import numpy as np
import torch

SCHEMES = ("vinyals", "lake")
SPLITS = ("train", "val", "test")
CURRENT = {"vinyals": "v1", "lake": "v0"}
QUARTER_TURN_DEGREES = 90


def _read(path: str) -> str:
    return resources.files("metabench").joinpath(f"protocols/{path}").read_text()


@cache
def _protocol() -> dict:
    return json.loads(_read("omniglot_splits.json"))


@cache
def alphabets() -> tuple[dict, ...]:
    """The 50 alphabets in data-row order: ``name``, ``set``, ``first_id``, ``first_row``, ``n_characters``."""
    rows = csv.DictReader(io.StringIO(_read("omniglot_alphabets.csv")))
    table = [
        {
            "name": row["alphabet"],
            "set": row["set"],
            "first_id": int(row["first_id"]),
            "first_row": int(row["first_row"]),
            "n_characters": int(row["n_characters"]),
        }
        for row in rows
    ]
    return tuple(sorted(table, key=lambda row: row["first_row"]))


@cache
def alphabet_of_rows() -> np.ndarray:
    """Alphabet index (into :func:`alphabets`) of every data row, int64 ``(1623,)``."""
    return np.concatenate([np.full(a["n_characters"], i) for i, a in enumerate(alphabets())]).astype(np.int64)


def _check(scheme: str, split: str, edition: str | None = None) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {SCHEMES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    edition = CURRENT[scheme] if edition is None else edition
    if edition not in _protocol()[scheme]:
        raise ValueError(f"scheme {scheme!r} has no edition {edition!r}; installed: {sorted(_protocol()[scheme])}")
    return edition


@cache
def _class_file(folder: str, split: str) -> tuple[tuple[int, int], ...]:
    """``Alphabet/characterNN/rotDDD`` lines mapped to ``(row, quarter_turns)``, in file order."""
    first_row = {a["name"]: (a["first_row"], a["n_characters"]) for a in alphabets()}
    classes = []
    for number, line in enumerate(_read(f"{folder}/{split}.txt").split(), start=1):
        name, character, rotation = line.split("/")
        start, count = first_row[name]
        index, degrees = int(character.removeprefix("character")), int(rotation.removeprefix("rot"))
        if not 1 <= index <= count or degrees % QUARTER_TURN_DEGREES:
            raise ValueError(f"{folder}/{split}.txt line {number}: {line!r} is not a class of Omniglot")
        classes.append((start + index - 1, degrees // QUARTER_TURN_DEGREES))
    return tuple(classes)


def manifest(scheme: str, split: str, edition: str | None = None) -> list[tuple[int, int]]:
    """The split's classes as ``(character, quarter_turns)`` pairs, in canonical order.

    ``quarter_turns`` ``k`` means the drawing rotated by ``k * 90`` degrees counter-clockwise
    (``torch.rot90(image, k)``, Pillow's ``rotate(90 * k)``).
    """
    edition = _check(scheme, split, edition)  # before indexing: an unknown scheme is a ValueError, not a KeyError
    spec = _protocol()[scheme][edition]
    if "class_files" in spec:
        return list(_class_file(spec["class_files"], split))
    return [(c, r) for c in spec["characters"][split] for r in spec["rotations"]]


def characters(scheme: str, split: str, edition: str | None = None) -> list[int]:
    """Sorted character rows of one split."""
    return sorted({c for c, _ in manifest(scheme, split, edition)})


def manifest_sha256(scheme: str, split: str, edition: str | None = None) -> str:
    """sha256 of the manifest as compact JSON: the identity of a split's class list."""
    text = json.dumps(manifest(scheme, split, edition), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def editions(scheme: str) -> list[str]:
    """The installed editions of a scheme."""
    _check(scheme, "train")
    return sorted(_protocol()[scheme])


def find_edition(scheme: str, split: str, pinned_sha256: str | None) -> str:
    """The installed edition whose manifest hashes to ``pinned_sha256`` (the current one if None).

    Raises RuntimeError if none does: the env version needs split files this installation lacks.
    """
    if pinned_sha256 is None:
        return _check(scheme, split)
    for edition in editions(scheme):
        if manifest_sha256(scheme, split, edition) == pinned_sha256:
            return edition
    raise RuntimeError(
        f"no installed {scheme}/{split} split has the manifest sha256 {pinned_sha256[:12]} that this env version "
        f"pins (installed: {', '.join(f'{e}={manifest_sha256(scheme, split, e)[:12]}' for e in editions(scheme))}): "
        "reinstall metabench"
    )


def class_table(scheme: str, split: str, edition: str | None = None) -> torch.Tensor:
    """The manifest as an int64 tensor of shape ``(n_classes, 2)``: columns character, rotation."""
    return torch.tensor(manifest(scheme, split, edition), dtype=torch.int64)


def describe(scheme: str, edition: str | None = None) -> str:
    """One-paragraph description of a scheme's edition, for docs and ``metabench envs``."""
    edition = _check(scheme, "train", edition)
    return _protocol()[scheme][edition]["description"]
