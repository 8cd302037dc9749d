"""Splits are disjoint, match their documented construction and the hashes pinned by env versions 0 and 1."""

from __future__ import annotations

import numpy as np
import pytest

from metabench import splits
from metabench.envs import OMNIGLOT_V0_MANIFESTS, OMNIGLOT_V1_MANIFESTS

# (scheme, edition, characters per split, rotations); edition None is the scheme's current edition
SIZES = [
    ("vinyals", None, (1028, 172, 423), 4),
    ("vinyals", "v1", (1028, 172, 423), 4),
    ("vinyals", "v0", (1100, 100, 423), 4),
    ("lake", None, (850, 114, 659), 1),
    ("lake", "v0", (850, 114, 659), 1),
]
EDITIONS = [("vinyals", "v0"), ("vinyals", "v1"), ("lake", "v0")]


@pytest.mark.parametrize(("scheme", "edition", "sizes", "n_rotations"), SIZES)
def test_split_sizes(scheme, edition, sizes, n_rotations):
    for split, size in zip(splits.SPLITS, sizes, strict=True):
        assert len(splits.characters(scheme, split, edition)) == size
        assert len(splits.manifest(scheme, split, edition)) == size * n_rotations
        assert splits.class_table(scheme, split, edition).shape == (size * n_rotations, 2)


def test_editions_and_the_current_one():
    assert splits.editions("vinyals") == ["v0", "v1"]
    assert splits.editions("lake") == ["v0"]
    assert splits.CURRENT == {"vinyals": "v1", "lake": "v0"}
    for scheme, edition in EDITIONS:
        assert splits.describe(scheme, edition)
    assert splits.describe("vinyals") == splits.describe("vinyals", "v1") != splits.describe("vinyals", "v0")
    for split in splits.SPLITS:
        assert splits.manifest("vinyals", split) == splits.manifest("vinyals", split, "v1")
        assert splits.manifest("vinyals", split, "v0") != splits.manifest("vinyals", split, "v1")


@pytest.mark.parametrize(("scheme", "edition"), EDITIONS)
def test_splits_never_share_a_character_and_cover_omniglot(scheme, edition):
    sets = [set(splits.characters(scheme, split, edition)) for split in splits.SPLITS]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    assert set().union(*sets) == set(range(1623))


def test_vinyals_v0_split_is_the_documented_permutation():
    perm = np.random.RandomState(0).permutation(1623)
    assert splits.characters("vinyals", "train", "v0") == sorted(perm[:1100].tolist())
    assert splits.characters("vinyals", "val", "v0") == sorted(perm[1100:1200].tolist())
    assert splits.characters("vinyals", "test", "v0") == sorted(perm[1200:].tolist())
    assert {r for _, r in splits.manifest("vinyals", "val", "v0")} == {0, 1, 2, 3}
    # the current edition is no longer that permutation
    assert splits.characters("vinyals", "train") != sorted(perm[:1100].tolist())


def test_vinyals_v1_split_keeps_whole_alphabets_mostly_together():
    """The standard split is by alphabet (mostly): far fewer alphabets straddle train and test than in v0."""
    alphabet = splits.alphabet_of_rows()
    assert alphabet.shape == (1623,) and len(splits.alphabets()) == 50

    def straddling(edition: str) -> int:
        train = set(alphabet[splits.characters("vinyals", "train", edition)].tolist())
        test = set(alphabet[splits.characters("vinyals", "test", edition)].tolist())
        return len(train & test)

    assert straddling("v0") >= 40
    assert straddling("v1") <= 5


def test_lake_split_is_background_versus_evaluation():
    assert splits.characters("lake", "train") + splits.characters("lake", "val") == list(range(964))
    assert splits.characters("lake", "test") == list(range(964, 1623))
    assert {r for _, r in splits.manifest("lake", "train")} == {0}


def test_manifests_match_the_hashes_pinned_by_env_versions_0_and_1():
    for scheme in splits.SCHEMES:
        for split in splits.SPLITS:
            assert splits.manifest_sha256(scheme, split, "v0") == OMNIGLOT_V0_MANIFESTS[scheme][split]
            assert splits.manifest_sha256(scheme, split) == OMNIGLOT_V1_MANIFESTS[scheme][split]
            assert splits.find_edition(scheme, split, OMNIGLOT_V0_MANIFESTS[scheme][split]) == "v0"
            assert splits.find_edition(scheme, split, OMNIGLOT_V1_MANIFESTS[scheme][split]) == splits.CURRENT[scheme]


def test_unknown_scheme_split_or_edition_is_refused():
    with pytest.raises(ValueError, match="unknown split scheme"):
        splits.manifest("omniglot", "train")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        splits.manifest("vinyals", "validation")
    with pytest.raises(ValueError, match="no edition 'v1'"):
        splits.manifest("lake", "train", "v1")
    with pytest.raises(RuntimeError, match="reinstall metabench"):
        splits.find_edition("lake", "train", OMNIGLOT_V1_MANIFESTS["vinyals"]["train"])
