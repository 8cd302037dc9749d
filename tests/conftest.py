"""Test set-up: read the real Omniglot from the shared folder unless $METABENCH_DATA says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
os.environ.setdefault("METABENCH_DATA", str(SHARED_OMNIGLOT))


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The folder holding the real Omniglot npz files and the official small zip."""
    path = Path(os.environ["METABENCH_DATA"])
    if not (path / "images_background.npz").exists():
        pytest.fail(f"Omniglot not found in {path}; set METABENCH_DATA to the shared omniglot folder")
    return path


@pytest.fixture
def splits_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The splits whose class tables are read during the test, in order (``splits.class_table`` recorded)."""
    from metabench import splits

    requested: list[str] = []
    class_table = splits.class_table

    def recording(scheme: str, split: str, edition: str | None = None):
        requested.append(split)
        return class_table(scheme, split, edition)

    monkeypatch.setattr(splits, "class_table", recording)
    return requested
