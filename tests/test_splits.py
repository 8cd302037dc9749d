"""Splits are disjoint, match their documented construction and the hashes pinned by env version 0."""

from __future__ import annotations

import numpy as np
import pytest

from metabench import splits
from metabench.envs import OMNIGLOT_V0_MANIFESTS


@pytest.mark.parametrize(
    ("scheme", "sizes", "n_rotations"), [("vinyals", (1100, 100, 423), 4), ("lake", (850, 114, 659), 1)]
)
def test_split_sizes(scheme, sizes, n_rotations):
    for split, size in zip(splits.SPLITS, sizes, strict=True):
        assert len(splits.characters(scheme, split)) == size
        assert len(splits.manifest(scheme, split)) == size * n_rotations
        assert splits.class_table(scheme, split).shape == (size * n_rotations, 2)


@pytest.mark.parametrize("scheme", splits.SCHEMES)
def test_splits_never_share_a_character_and_cover_omniglot(scheme):
    sets = [set(splits.characters(scheme, split)) for split in splits.SPLITS]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert set().union(*sets) == set(range(1623))


def test_vinyals_split_is_the_documented_permutation():
    perm = np.random.RandomState(0).permutation(1623)
    assert splits.characters("vinyals", "train") == sorted(perm[:1100].tolist())
    assert splits.characters("vinyals", "val") == sorted(perm[1100:1200].tolist())
    assert splits.characters("vinyals", "test") == sorted(perm[1200:].tolist())
    assert {r for _, r in splits.manifest("vinyals", "val")} == {0, 1, 2, 3}


def test_lake_split_is_background_versus_evaluation():
    assert splits.characters("lake", "train") + splits.characters("lake", "val") == list(range(964))
    assert splits.characters("lake", "test") == list(range(964, 1623))
    assert {r for _, r in splits.manifest("lake", "train")} == {0}


def test_manifests_match_the_hashes_pinned_by_env_version_0():
    for scheme in splits.SCHEMES:
        for split in splits.SPLITS:
            assert splits.manifest_sha256(scheme, split) == OMNIGLOT_V0_MANIFESTS[scheme][split]


def test_unknown_scheme_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown split scheme"):
        splits.manifest("omniglot", "train")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        splits.manifest("vinyals", "validation")
