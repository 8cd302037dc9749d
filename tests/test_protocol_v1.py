"""Version 1 of the Omniglot protocol: the published split, the reference (Pillow) images, Lake's protocol."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import metabench
from metabench import data, splits
from metabench.envs import DEPRECATED_IDS, OMNIGLOT_V0_MANIFESTS, OMNIGLOT_V1_MANIFESTS
from metabench.episodes import rotations

V1_IDS = ["MetaOmniglot-5w1s", "MetaOmniglot-5w5s", "MetaOmniglot-20w1s", "MetaOmniglot-20w5s"]


def pillow_reference(png: bytes, quarter_turns: int) -> np.ndarray:
    """The ProtoNets pipeline: open the 1-bit PNG, rotate, resize to 28x28, ink = 1 (as bool)."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "1"
        resized = image.rotate(90 * quarter_turns).resize((28, 28))
        return ~np.asarray(resized, dtype=bool)


def test_v1_images_equal_the_pillow_pipeline_on_the_official_pngs_for_all_rotations(omniglot_dir: Path):
    archive_path = omniglot_dir / "images_background_small1.zip"
    _, ink, ids = data.import_zip(archive_path)
    ours = rotations(data.preprocess(ink))  # (characters, 4, 20, 28, 28), as the episode sampler builds them
    row = {cid: r for r, cid in enumerate(ids.tolist())}
    compared = 0
    with zipfile.ZipFile(archive_path) as archive:
        for name in archive.namelist():
            if not name.endswith(".png"):
                continue
            cid, drawing = (int(part) for part in Path(name).stem.split("_"))
            png = archive.read(name)
            for k in range(4):
                expected = pillow_reference(png, k)
                np.testing.assert_array_equal(ours[row[cid - 1], k, drawing - 1].numpy() == 255, expected, err_msg=name)
                compared += 1
    assert compared == 4 * 20 * len(ids) == 4 * 2720
    assert set(torch.unique(ours).tolist()) == {0, 255}


def test_env_classes_are_the_pillow_pipeline_of_the_named_drawing():
    """End to end: a v1 test class ``Alphabet/characterNN/rotDDD`` shows Pillow's rotate-then-resize of that drawing."""
    env = gym.make("MetaOmniglot-5w1s", split="test").unwrapped
    raw = data.load_raw()
    generator = torch.Generator().manual_seed(0)
    classes = torch.randint(len(env.sampler.classes), (40,), generator=generator)
    drawings = torch.randint(data.N_DRAWINGS, (40,), generator=generator)
    images = env.sampler.images(classes, drawings)
    for image, c, d in zip(images, classes.tolist(), drawings.tolist(), strict=True):
        character, turns = env.sampler.classes[c].tolist()
        buffer = io.BytesIO()
        Image.fromarray(~raw[character, d]).convert("1").save(buffer, format="PNG")
        np.testing.assert_array_equal(image.numpy() == 255, pillow_reference(buffer.getvalue(), turns))


def standard_classes(omniglot_dir: Path, split: str) -> list[tuple[int, int]]:
    """The standard split file parsed independently of metabench, through the shared alphabets.csv."""
    with open(omniglot_dir / "alphabets.csv") as handle:
        first_row = {row["alphabet"]: int(row["first_row"]) for row in csv.DictReader(handle)}
    classes = []
    for line in (omniglot_dir / "splits" / "vinyals" / f"{split}.txt").read_text().split():
        alphabet, character, rotation = line.split("/")
        classes.append((first_row[alphabet] + int(character[len("character") :]) - 1, int(rotation[3:]) // 90))
    return classes


@pytest.mark.parametrize(("split", "n_classes"), [("train", 4112), ("val", 688), ("test", 1692)])
def test_v1_split_is_exactly_the_standard_split_files(omniglot_dir: Path, split: str, n_classes: int):
    expected = standard_classes(omniglot_dir, split)
    assert len(expected) == len(set(expected)) == n_classes
    assert splits.manifest("vinyals", split) == expected
    env = gym.make("MetaOmniglot-20w1s", split=split).unwrapped
    assert env.sampler.classes.tolist() == [list(c) for c in expected]
    assert env.protocol["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["vinyals"][split]


def test_the_standard_split_keeps_characters_and_rotations_together_and_disjoint():
    character_sets = [set(splits.characters("vinyals", split)) for split in splits.SPLITS]
    assert [len(s) for s in character_sets] == [1028, 172, 423]
    assert set().union(*character_sets) == set(range(data.N_CHARACTERS))
    assert sum(len(s) for s in character_sets) == data.N_CHARACTERS
    for split in splits.SPLITS:
        turns: dict[int, set[int]] = {}
        for character, k in splits.manifest("vinyals", split):
            turns.setdefault(character, set()).add(k)
        assert all(value == {0, 1, 2, 3} for value in turns.values())


def test_lake_scheme_matches_the_alphabets_table(omniglot_dir: Path):
    with open(omniglot_dir / "alphabets.csv") as handle:
        table = list(csv.DictReader(handle))

    def rows(names: list[str]) -> list[int]:
        by_name = {row["alphabet"]: row for row in table}
        return sorted(
            r
            for name in names
            for r in range(
                int(by_name[name]["first_row"]), int(by_name[name]["first_row"]) + int(by_name[name]["n_characters"])
            )
        )

    background = [row["alphabet"] for row in table if row["set"] == "background"]
    evaluation = [row["alphabet"] for row in table if row["set"] == "evaluation"]
    assert len(background) == 30 and len(evaluation) == 20
    val_alphabets = ["Sanskrit", "Tagalog", "Tifinagh"]
    assert splits.characters("lake", "val") == rows(val_alphabets)
    assert splits.characters("lake", "train") == rows([a for a in background if a not in val_alphabets])
    assert splits.characters("lake", "test") == rows(evaluation)
    assert {k for _, k in splits.manifest("lake", "test")} == {0}


@pytest.mark.parametrize("env_id", V1_IDS)
def test_unversioned_ids_are_v1_with_binary_pixels(env_id: str):
    env = gym.make(env_id)
    assert env.spec.id == f"{env_id}-v1"
    protocol = env.unwrapped.protocol
    assert protocol["preprocessing"] == data.PREPROCESSING == "pillow-nearest-105to28-ink255"
    assert protocol["task_sampling"] == "uniform"
    for seed in range(3):
        observation, _ = env.reset(seed=seed)
        for key in ("support_images", "query_images"):
            assert set(np.unique(observation[key]).tolist()) == {0, 255}


def test_v1_vector_env_batches_are_binary_too():
    envs = gym.make_vec("MetaOmniglot-20w5s", num_envs=8)
    observation, _ = envs.reset(seed=0)
    assert set(np.unique(observation["query_images"]).tolist()) == {0, 255}


def test_v0_ids_keep_their_protocol_and_are_marked_deprecated():
    protocol = gym.make("MetaOmniglot-5w1s-v0").unwrapped.protocol
    assert protocol["preprocessing"] == "area-105to28-ink255"
    assert protocol["manifest_sha256"] == OMNIGLOT_V0_MANIFESTS["vinyals"]["train"]
    assert protocol["data_sha256"] == data.PREPROCESSINGS["area-105to28-ink255"]
    assert "task_sampling" not in protocol  # v0 records predate it: their stored protocols stay valid
    v0 = {env_id for env_id in metabench.ENV_IDS if env_id.endswith("-v0") and "Sinusoid" not in env_id}
    assert DEPRECATED_IDS == v0 | {"MetaAugment-Omniglot-5w1s-v1"} and len(v0) == 9  # v2 trains under the policy
    for env_id in metabench.ENV_IDS:
        if "Omniglot" in env_id and env_id.endswith("-v0"):
            assert env_id.replace("-v0", "-v1") in metabench.ENV_IDS  # every Omniglot env moved to v1


@pytest.mark.parametrize("env_id", ["MetaOptimizer-Omniglot-5w1s-v1", "MetaNAS-Omniglot-5w1s-v1"])
def test_envs_built_on_omniglot_use_the_v1_data(env_id: str):
    kwargs = {"fidelity": 1, "val_episodes": 2} if "NAS" in env_id else {}
    protocol = gym.make(env_id, **kwargs).unwrapped.protocol
    assert protocol["preprocessing"] == "pillow-nearest-105to28-ink255"
    manifests = {protocol.get(key) for key in ("manifest_sha256", "train_manifest_sha256", "val_manifest_sha256")}
    assert manifests - {None} <= set(OMNIGLOT_V1_MANIFESTS["vinyals"].values())


def test_within_alphabet_tasks_draw_every_class_from_one_alphabet():
    env = gym.make("MetaOmniglot-LakeWithinAlphabet-20w1s", split="test").unwrapped
    assert env.protocol["task_sampling"] == "within-alphabet" and env.protocol["scheme"] == "lake"
    index = env.sampler.sample_index(400, torch.Generator().manual_seed(0))
    characters = env.sampler.classes[index.classes][..., 0].numpy()
    alphabet = splits.alphabet_of_rows()[characters]
    assert (alphabet == alphabet[:, :1]).all()
    assert all(len(set(row)) == 20 for row in characters.tolist())  # distinct classes
    # every one of the 20 evaluation alphabets has >= 20 characters, so each is drawn (uniformly, 20 each on average)
    counts = np.bincount(alphabet[:, 0], minlength=50)[30:]
    assert (counts > 5).all() and counts.sum() == 400
    uniform = gym.make("MetaOmniglot-Lake-20w1s", split="test").unwrapped
    index = uniform.sampler.sample_index(50, torch.Generator().manual_seed(0))
    alphabet = splits.alphabet_of_rows()[uniform.sampler.classes[index.classes][..., 0].numpy()]
    assert not (alphabet == alphabet[:, :1]).all()


def test_within_alphabet_refuses_a_way_no_alphabet_has():
    with pytest.raises(ValueError, match="exceeds every alphabet"):
        gym.make("MetaOmniglot-LakeWithinAlphabet-20w1s", n_way=60)
    with pytest.raises(ValueError, match="task_sampling"):
        gym.make("MetaOmniglot-5w1s", task_sampling="by-alphabet")


def test_a_pin_selects_the_installed_edition_or_refuses():
    assert splits.find_edition("vinyals", "test", OMNIGLOT_V0_MANIFESTS["vinyals"]["test"]) == "v0"
    assert splits.find_edition("vinyals", "test", OMNIGLOT_V1_MANIFESTS["vinyals"]["test"]) == "v1"
    assert splits.find_edition("vinyals", "test", None) == splits.CURRENT["vinyals"] == "v1"
    with pytest.raises(RuntimeError, match="reinstall metabench"):
        splits.find_edition("vinyals", "test", "0" * 64)
