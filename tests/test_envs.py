"""The environment contract: ids, spaces, reward = minus the query loss, bad actions, seeding, vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3.common.env_checker as sb3_checker
import torch
from gymnasium.envs.registration import find_highest_version, parse_env_id
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import metabench
from metabench.envs import MetaOmniglotEnv, MetaOmniglotVectorEnv, MetaSinusoidEnv, MetaSinusoidVectorEnv
from metabench.envs.common import MAX_QUERY_LOSS, resolve_device


def cross_entropy_by_hand(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize(
    "env_id",
    [
        "MetaOmniglot-20w1s",
        "MetaOmniglot-5w1s",
        "MetaOmniglot-5w5s",
        "MetaOmniglot-20w5s",
        "MetaOmniglot-5w1s-v0",
        "MetaOmniglot-5w1s-v1",
        "MetaOmniglot-Lake-20w1s",
        "MetaOmniglot-LakeWithinAlphabet-20w1s-v1",
        "metabench:MetaOmniglot-20w1s",
        "MetaSinusoid-5shot",
        "MetaSinusoid-10shot-v0",
    ],
)
def test_every_documented_id_makes_an_env(env_id):
    env = gym.make(env_id)
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert env.action_space.shape == env.action_space.sample().shape


OMNIGLOT_BASED_V0 = [
    "MetaOmniglot-5w1s-v0",
    "MetaOmniglot-5w5s-v0",
    "MetaOmniglot-20w1s-v0",
    "MetaOmniglot-20w5s-v0",
    "MetaOptimizer-Omniglot-5w1s-v0",
    "MetaAugment-Omniglot-5w1s-v0",
    "MetaAugment-Omniglot-20w1s-v0",
    "MetaNAS-Omniglot-5w1s-v0",
    "MetaNAS-Omniglot-20w1s-v0",
]
NEW_IN_V1 = ["MetaOmniglot-Lake-20w1s-v1", "MetaOmniglot-LakeWithinAlphabet-20w1s-v1", "MetaReweight-Omniglot-5w10s-v1"]
SINUSOID = ["MetaSinusoid-5shot-v0", "MetaSinusoid-10shot-v0", "MetaOptimizer-Sinusoid-v0", "MetaReweight-Sinusoid-v0"]


def test_ids_are_versioned_and_listed():
    v1 = [env_id.replace("-v0", "-v1") for env_id in OMNIGLOT_BASED_V0] + NEW_IN_V1
    v2 = ["MetaAugment-Omniglot-5w1s-v2"]  # the policy augments the training episodes (v1: the support set)
    assert sorted(metabench.ENV_IDS) == sorted(OMNIGLOT_BASED_V0 + v1 + v2 + SINUSOID)
    assert len(metabench.ENV_IDS) == len(set(metabench.ENV_IDS)) == 26
    # the sinusoid envs have only v0, still current
    assert metabench.envs.DEPRECATED_IDS == {*OMNIGLOT_BASED_V0, "MetaAugment-Omniglot-5w1s-v1"}
    for env_id in metabench.ENV_IDS:
        namespace, name, _ = parse_env_id(env_id)
        assert env_id in gym.registry and namespace is None
        # an unversioned id resolves to the highest version: 1 for every Omniglot-based env, 2 for MetaAugment 5w1s
        highest = 2 if name == "MetaAugment-Omniglot-5w1s" else 1 if "Omniglot" in name else 0
        assert find_highest_version(None, name) == highest
    assert gym.make("MetaOmniglot-5w1s").spec.id == "MetaOmniglot-5w1s-v1"
    assert gym.make("MetaSinusoid-5shot").spec.id == "MetaSinusoid-5shot-v0"
    with pytest.raises(gym.error.NameNotFound):
        gym.make("MetaOmniglott-5w1s")
    with pytest.raises(gym.error.VersionNotFound):
        gym.make("MetaOmniglot-5w1s-v7")


def test_spaces_of_20w1s():
    env = gym.make("MetaOmniglot-20w1s")
    assert env.observation_space["support_images"].shape == (20, 1, 28, 28)
    assert env.observation_space["support_images"].dtype == np.uint8
    assert env.observation_space["query_images"].shape == (300, 1, 28, 28)
    assert env.action_space.shape == (300, 20) and env.action_space.dtype == np.float32
    observation, _ = env.reset(seed=1)
    assert set(observation) == {"support_images", "support_labels", "query_images"}
    assert sorted(observation["support_labels"].tolist()) == list(range(20))


def test_reward_is_minus_the_hand_computed_query_cross_entropy():
    env = gym.make("MetaOmniglot-5w1s")
    env.reset(seed=3)
    logits = np.random.default_rng(0).normal(size=(75, 5)).astype(np.float32) * 3
    _, reward, terminated, truncated, info = env.step(logits)
    assert terminated and not truncated
    losses = cross_entropy_by_hand(logits, info["query_labels"])
    np.testing.assert_allclose(info["query_losses"], losses, rtol=1e-5, atol=1e-6)
    assert reward == pytest.approx(-losses.mean(), rel=1e-5)
    assert info["accuracy"] == pytest.approx((logits.argmax(1) == info["query_labels"]).mean())


def test_knowing_the_labels_gives_full_accuracy_and_near_zero_loss():
    env = gym.make("MetaOmniglot-5w5s")
    env.reset(seed=4)
    _, _, _, _, info = env.step(np.zeros((75, 5), np.float32))
    env.reset(seed=4)  # same task again
    oracle = np.eye(5, dtype=np.float32)[info["query_labels"]] * 50
    _, reward, _, _, info = env.step(oracle)
    assert info["accuracy"] == 1.0 and reward > -1e-6
    env.reset(seed=4)
    _, reward, _, _, _ = env.step(np.zeros((75, 5), np.float32))
    assert reward == pytest.approx(-np.log(5), rel=1e-6)


def test_observation_never_holds_query_labels():
    env = gym.make("MetaOmniglot-5w1s")
    observation, info = env.reset(seed=0)
    assert "query_labels" not in observation and not info


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.zeros((75, 4), np.float32), r"shape \(75, 5\)"),
        (np.zeros((5, 75), np.float32), r"shape \(75, 5\)"),
        (np.zeros(375, np.float32), r"shape \(75, 5\)"),
        (np.full((75, 5), "a"), "real numbers"),
        (np.full((75, 5), np.nan, np.float32), "NaN or inf"),
        (np.full((75, 5), np.inf), "NaN or inf"),
        (torch.zeros(75, 5, dtype=torch.complex64), "real numbers"),
    ],
)
def test_bad_actions_are_refused_clearly(action, message):
    env = MetaOmniglotEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_finite_logits_outside_the_declared_box_are_scored_as_given():
    env = MetaOmniglotEnv()
    env.reset(seed=0)
    logits = np.zeros((75, 5), np.float32)
    logits[:, 0] = 1000.0
    _, reward, _, _, info = env.step(logits)
    assert reward == pytest.approx(-cross_entropy_by_hand(logits, info["query_labels"]).mean(), rel=1e-5)
    assert reward < -500  # four in five queries are confidently wrong by 1000 nats


def test_actions_of_other_real_dtypes_and_types_are_cast():
    env = MetaOmniglotEnv()
    for action in (np.zeros((75, 5), np.float64), np.zeros((75, 5), np.int32), torch.zeros(75, 5), [[0.0] * 5] * 75):
        env.reset(seed=0)
        _, reward, *_ = env.step(action)
        assert reward == pytest.approx(-np.log(5), rel=1e-6)


def test_step_before_reset_or_after_the_end_is_refused():
    env = MetaOmniglotEnv()
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(np.zeros((75, 5), np.float32))
    env.reset(seed=0)
    env.step(np.zeros((75, 5), np.float32))
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(np.zeros((75, 5), np.float32))


def test_same_seed_same_task_different_seed_different_task():
    env_a, env_b = gym.make("MetaOmniglot-5w1s"), gym.make("MetaOmniglot-5w1s")
    obs_a, _ = env_a.reset(seed=11)
    obs_b, _ = env_b.reset(seed=11)
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_b[key])
    obs_c, _ = env_a.reset(seed=12)
    assert not np.array_equal(obs_a["query_images"], obs_c["query_images"])
    # unseeded resets continue the seeded stream reproducibly
    env_a.reset(seed=5)
    env_b.reset(seed=5)
    np.testing.assert_array_equal(env_a.reset()[0]["query_images"], env_b.reset()[0]["query_images"])


def test_split_and_scheme_are_arguments_with_their_protocol():
    env = gym.make("MetaOmniglot-5w1s", split="test", scheme="lake")
    protocol = env.unwrapped.protocol
    assert (protocol["scheme"], protocol["split"]) == ("lake", "test")
    assert protocol["manifest_sha256"] == metabench.envs.OMNIGLOT_V0_MANIFESTS["lake"]["test"]
    env.reset(seed=0)


def test_an_env_refuses_a_split_that_differs_from_its_pinned_version():
    pinned = {"vinyals": {"train": "0" * 64}}
    with pytest.raises(RuntimeError, match=r"no installed vinyals/train split has the manifest sha256 000000000000"):
        MetaOmniglotEnv(manifest_sha256=pinned)
    with pytest.raises(RuntimeError, match="reinstall metabench"):
        MetaOmniglotEnv(split="test", scheme="lake", manifest_sha256={"lake": {"test": "f" * 64}})
    with pytest.raises(ValueError, match="preprocessing"):
        MetaOmniglotEnv(preprocessing="nearest")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_pin_selects_the_edition_of_the_split(split):
    v0 = MetaOmniglotEnv(split=split, manifest_sha256=metabench.envs.OMNIGLOT_V0_MANIFESTS)
    v1 = MetaOmniglotEnv(split=split, manifest_sha256=metabench.envs.OMNIGLOT_V1_MANIFESTS)
    assert v0.protocol["manifest_sha256"] == metabench.envs.OMNIGLOT_V0_MANIFESTS["vinyals"][split]
    assert v1.protocol["manifest_sha256"] == metabench.envs.OMNIGLOT_V1_MANIFESTS["vinyals"][split]
    assert v0.sampler.classes.tolist() == [list(c) for c in metabench.splits.manifest("vinyals", split, "v0")]
    assert v1.sampler.classes.tolist() == [list(c) for c in metabench.splits.manifest("vinyals", split, "v1")]
    unpinned = MetaOmniglotEnv(split=split)  # no pin: the current edition
    assert unpinned.protocol["manifest_sha256"] == v1.protocol["manifest_sha256"]


@pytest.mark.parametrize("env_id", ["MetaOmniglot-5w1s", "MetaOmniglot-20w5s", "MetaSinusoid-5shot"])
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    env = gym.make(env_id).unwrapped
    check_env(env, skip_render_check=True)
    with pytest.warns(UserWarning, match=r"range=\[-1, 1\]"):  # SB3 prefers [-1, 1] actions; ours are logits
        sb3_checker.check_env(env, warn=True)


def test_vector_env_scores_a_whole_meta_batch():
    envs = gym.make_vec("MetaOmniglot-5w1s", num_envs=32)
    assert isinstance(envs, MetaOmniglotVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    observation, _ = envs.reset(seed=0)
    assert observation["query_images"].shape == (32, 75, 1, 28, 28)
    assert envs.observation_space.contains(observation)
    logits = np.random.default_rng(1).normal(size=(32, 75, 5)).astype(np.float32)
    next_observation, rewards, terminated, truncated, info = envs.step(logits)
    assert rewards.shape == (32,) and terminated.all() and not truncated.any()
    labels = info["final_info"]["query_labels"]
    np.testing.assert_allclose(rewards, -cross_entropy_by_hand(logits, labels).mean(axis=1), rtol=1e-5)
    assert info["final_obs"] is observation
    assert not np.array_equal(next_observation["query_images"], observation["query_images"])
    with pytest.raises(ValueError, match=r"shape \(32, 75, 5\)"):
        envs.step(logits[:31])


def test_vector_env_seeding_reproduces_meta_batches():
    a = gym.make_vec("MetaOmniglot-20w1s", num_envs=8)
    b = gym.make_vec("MetaOmniglot-20w1s", num_envs=8)
    np.testing.assert_array_equal(a.reset(seed=2)[0]["support_images"], b.reset(seed=2)[0]["support_images"])
    zeros = np.zeros((8, 300, 20), np.float32)
    np.testing.assert_array_equal(a.step(zeros)[0]["query_images"], b.step(zeros)[0]["query_images"])


def test_sinusoid_reward_is_minus_the_query_mse():
    env = gym.make("MetaSinusoid-10shot")
    observation, _ = env.reset(seed=0)
    assert observation["support_x"].shape == (10, 1) and observation["query_x"].shape == (10, 1)
    predictions = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    _, reward, terminated, _, info = env.step(predictions)
    assert terminated
    assert reward == pytest.approx(-np.mean((predictions - info["query_targets"]) ** 2), rel=1e-5)
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(info["query_targets"])
    assert reward == 0.0


def test_sinusoid_vector_env():
    envs = gym.make_vec("MetaSinusoid-5shot", num_envs=16)
    assert isinstance(envs, MetaSinusoidVectorEnv)
    observation, _ = envs.reset(seed=0)
    assert observation["support_y"].shape == (16, 5, 1)
    _, rewards, _, _, info = envs.step(np.zeros((16, 10, 1), np.float32))
    np.testing.assert_allclose(rewards, -(info["final_info"]["query_targets"][..., 0] ** 2).mean(1), rtol=1e-5)


EXTREME_LOGITS = [
    np.where(np.arange(5) == 0, np.float32(3.4e38), np.float32(-3.4e38)) * np.ones((75, 1), np.float32),
    np.full((75, 5), -3.4e38, np.float32),
    np.tile(np.array([3.4e38, -3.4e38, 0, 1, 2], np.float32), (75, 1)),
    np.full((75, 5), 1e300) * np.array([1, -1, 1, -1, 1]),  # finite float64 beyond float32's range
]


@pytest.mark.parametrize("logits", EXTREME_LOGITS)
def test_every_finite_logit_gets_a_finite_reward(logits):
    env = MetaOmniglotEnv()
    env.reset(seed=0)
    _, reward, _, _, info = env.step(logits)
    assert np.isfinite(reward) and np.isfinite(info["query_losses"]).all()
    assert -MAX_QUERY_LOSS <= reward <= 0 and info["query_losses"].max() <= MAX_QUERY_LOSS
    true_logits = np.take_along_axis(logits, info["query_labels"][:, None], axis=1)[:, 0]
    wrong_by_1e30 = true_logits < logits.max(axis=1) - 1e30
    assert (info["query_losses"][wrong_by_1e30] == MAX_QUERY_LOSS).all()  # the documented maximum
    assert (info["query_losses"][~wrong_by_1e30] <= np.log(5) + 1e-6).all()  # the others as given (ties)
    envs = MetaOmniglotVectorEnv(num_envs=2)
    envs.reset(seed=0)
    assert np.isfinite(envs.step(np.stack([logits, logits]))[1]).all()


@pytest.mark.parametrize("value", [1e19, -1e19, 3.4e38, -3.4e38, 1e300])
def test_every_finite_prediction_gets_a_finite_reward(value):
    env = gym.make("MetaSinusoid-10shot")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.full((10, 1), value))
    assert (info["query_losses"] == MAX_QUERY_LOSS).all()
    assert reward == pytest.approx(-MAX_QUERY_LOSS, rel=1e-6)  # their float32 mean
    envs = MetaSinusoidVectorEnv(num_envs=3, k_shot=5)
    envs.reset(seed=0)
    np.testing.assert_allclose(envs.step(np.full((3, 10, 1), value))[1], -MAX_QUERY_LOSS, rtol=1e-6)


def test_ordinary_actions_are_scored_bit_for_bit_as_before_the_loss_cap():
    """The cap changes no ordinary score: rewards equal the uncapped float32 formulas exactly."""
    env = gym.make("MetaOmniglot-20w1s-v1")
    env.reset(seed=7)
    logits = np.random.default_rng(7).normal(size=(300, 20)).astype(np.float32) * 4
    logits[0] = 1e4  # far outside the declared box, still far below the cap
    _, reward, _, _, info = env.step(logits)
    labels = torch.from_numpy(info["query_labels"])
    uncapped = torch.nn.functional.cross_entropy(torch.from_numpy(logits), labels, reduction="none")
    assert reward == -float(uncapped.mean())
    np.testing.assert_array_equal(info["query_losses"], uncapped.numpy())

    env = gym.make("MetaSinusoid-10shot-v0")
    env.reset(seed=7)
    predictions = np.random.default_rng(7).normal(size=(10, 1)).astype(np.float32) * 3
    predictions[0] = 3e4  # a squared error of 9e8, just below the cap
    _, reward, _, _, info = env.step(predictions)
    uncapped = (torch.from_numpy(predictions) - torch.from_numpy(info["query_targets"])).square().squeeze(-1)
    assert reward == -float(uncapped.mean()) and float(uncapped.max()) < MAX_QUERY_LOSS


def test_cuda_without_cuda_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    build = "CUDA is not available in this torch build"
    with pytest.raises(ValueError, match=f"device 'cuda': {build}"):
        MetaOmniglotEnv(device="cuda")
    with pytest.raises(ValueError, match=f"device 'cuda:0': {build}"):
        gym.make("MetaSinusoid-5shot", device="cuda:0")
    with pytest.raises(ValueError, match=build):
        gym.make_vec("MetaOmniglot-5w1s", num_envs=2, device=torch.device("cuda"))
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a machine without a usable GPU
    with pytest.raises(ValueError, match="CUDA is not available .* sees no GPU"):
        MetaSinusoidEnv(device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")
