"""Batched augmentation operations and the MetaAugment envs (policy in, minus the query loss out)."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3.common.env_checker as sb3_checker
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

import metabench  # registers the envs
import metabench.envs.augment as augment_env
from metabench import augment, data
from metabench.envs.augment import MetaAugmentEnv, pretrained_body

S = 5


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """24 real drawings, uint8 (24, 1, 28, 28)."""
    return data.load_omniglot()[:12, :2].reshape(24, 1, 28, 28).clone()


def tiny_body(out: Path, env_id: str) -> str:
    """A tiny pretrain checkpoint (width 16, a few steps) on ``env_id``, built by metabench's own training code."""
    return str(
        pretrained_body(env_id, out_dir=out, iterations=4, config={"width": 16, "batch_size": 32}, progress=False)
    )


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> str:
    """A tiny body for the version 1 envs (and :class:`MetaAugmentEnv`'s defaults): pretrained on a v1 id."""
    return tiny_body(tmp_path_factory.mktemp("body"), "MetaOmniglot-5w1s-v1")


@pytest.fixture(scope="module")
def body_v0(tmp_path_factory) -> str:
    """A tiny body for the version 0 envs: pretrained on a v0 id (its split edition and area-filtered images)."""
    return tiny_body(tmp_path_factory.mktemp("body-v0"), "MetaOmniglot-5w1s-v0")


def make(body: str, **kwargs) -> MetaAugmentEnv:
    return MetaAugmentEnv(checkpoint=body, **{"tasks_per_step": 3, "copies": 2, **kwargs})


def flat(policy: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(policy, dtype=np.int64).reshape(-1)


# --- operations ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", augment.OPS)
def test_each_op_keeps_shape_dtype_range_and_is_deterministic_under_a_seed(images, op):
    n = len(images)
    ops = torch.full((n,), augment.OPS.index(op))
    magnitudes = torch.arange(n) % augment.N_MAGNITUDES  # every bin, bin 0 included

    def run(batch: torch.Tensor, seed: int) -> torch.Tensor:
        return augment.apply_ops(batch, ops, magnitudes, torch.Generator().manual_seed(seed))

    out = run(images, 0)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, run(images, 0))
    floats = run(images.float() / 255, 0)
    assert floats.shape == images.shape and floats.dtype == torch.float32
    assert floats.min() >= 0 and floats.max() <= 1
    assert torch.equal((floats * 255).round().to(torch.uint8), out)  # same operation on either dtype
    changed = (out != images).flatten(1).any(dim=1)
    if op == "identity":
        assert torch.equal(out, images)
    elif op == "erase":  # a small square may fall on blank paper; the largest ones cannot miss every stroke
        assert changed.float().mean() >= 0.5 and changed[magnitudes >= 8].all()
    else:
        assert changed.all(), f"{op} left {int((~changed).sum())} images unchanged"


def test_magnitude_grows_the_change(images):
    for op in ("rotate", "elastic", "thicken", "noise"):
        index = augment.OPS.index(op)
        change = []
        for magnitude in (0, 9):
            out = augment.apply_ops(
                images, torch.full((len(images),), index), torch.full((len(images),), magnitude), torch.Generator()
            )
            change.append((out.float() - images.float()).abs().mean())
        assert change[1] > 2 * change[0], op


def test_policy_draws_a_sub_policy_per_image_and_applies_it_with_its_probability(images):
    rotate, noise = augment.OPS.index("rotate"), augment.OPS.index("noise")
    never = torch.tensor([[rotate, 9, 0], [noise, 9, 0]])
    assert torch.equal(augment.apply_policy(images, never, torch.Generator().manual_seed(0)), images)

    always = torch.tensor([[rotate, 3, 10], [noise, 7, 10]])
    ops, magnitudes = augment.sample_policy(always, 1000, torch.Generator().manual_seed(0))
    assert set(ops.tolist()) == {rotate, noise} and 400 < int((ops == rotate).sum()) < 600
    assert torch.equal(magnitudes, torch.where(ops == rotate, 3, 7))
    half = augment.sample_policy(torch.tensor([[rotate, 3, 5]]), 1000, torch.Generator().manual_seed(0))[0]
    assert 400 < int((half == rotate).sum()) < 600

    generator = torch.Generator().manual_seed(4)
    expected = augment.apply_ops(images, *augment.sample_policy(always, len(images), generator), generator)
    assert torch.equal(augment.apply_policy(images, always, torch.Generator().manual_seed(4)), expected)


def test_bad_policies_and_images_are_refused(images):
    with pytest.raises(ValueError, match="sub-policy 1 has operation 12, outside 0..11"):
        augment.check_policy(torch.tensor([[0, 0, 0], [12, 0, 0]]))
    with pytest.raises(ValueError, match="magnitude bin 10"):
        augment.check_policy(torch.tensor([[1, 10, 0]]))
    with pytest.raises(ValueError, match="probability bin -1"):
        augment.check_policy(torch.tensor([[1, 0, -1]]))
    with pytest.raises(ValueError, match=r"shape \(S, 3\)"):
        augment.check_policy(torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        augment.check_policy(torch.tensor([[1.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="uint8"):
        augment.apply_ops(images.long(), torch.zeros(24), torch.zeros(24), torch.Generator())


# --- the environment --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_spaces_checkers_and_registration(body, body_v0, version):
    checkpoint = body_v0 if version == 0 else body
    env = gym.make(f"MetaAugment-Omniglot-20w1s-v{version}", checkpoint=checkpoint, tasks_per_step=2, copies=1)
    unwrapped = env.unwrapped
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert env.action_space.nvec.tolist() == [len(augment.OPS), augment.N_MAGNITUDES, augment.N_PROBABILITIES] * S
    assert unwrapped.protocol["split"] == "val" and unwrapped.protocol["n_way"] == 20
    expected = metabench.envs.OMNIGLOT_VERSIONS[version]
    assert unwrapped.protocol["preprocessing"] == expected["preprocessing"]
    assert unwrapped.protocol["manifest_sha256"] == expected["manifest_sha256"]["vinyals"]["val"]
    assert unwrapped.learner.task["env_id"] == f"MetaOmniglot-5w1s-v{version}"
    spec = gym.spec(f"MetaAugment-Omniglot-5w1s-v{version}").kwargs
    assert (spec["sub_policies"], spec["copies"], spec["tasks_per_step"], spec["split"]) == (S, 4, 32, "val")
    assert spec["body_sha256"] == expected["body_sha256"]
    env.reset(seed=0)
    assert np.isfinite(env.step(flat(POLICY))[1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "(?s).*(symmetric and normalized|Box bound precision)")
        check_env(make(body, tasks_per_step=2), skip_render_check=True)
        sb3_checker.check_env(make(body, tasks_per_step=2))


@pytest.mark.parametrize("learner", ["finetune", "prototypes"])
def test_a_policy_that_never_augments_reproduces_the_reference_exactly(body, learner):
    env = make(body, learner=learner)
    rng = np.random.default_rng(0)
    identity_ops = np.stack([np.zeros(S), rng.integers(0, 10, S), rng.integers(0, 11, S)], axis=1)
    zero_probability = np.stack([rng.integers(1, 12, S), rng.integers(0, 10, S), np.zeros(S)], axis=1)
    references = []
    for policy in (identity_ops, zero_probability):
        env.reset(seed=3)
        _, reward, terminated, truncated, info = env.step(policy.reshape(-1).astype(np.int64))
        assert terminated and not truncated
        assert reward == info["reference_reward"] and info["accuracy"] == info["reference_accuracy"]
        assert np.array_equal(info["task_rewards"], info["reference_task_rewards"])
        assert info["augmented_fraction"] == 0.0
        references.append(info["reference_reward"])

    env.reset(seed=3)
    _, reward, *_, info = env.step(flat([(augment.OPS.index("elastic"), 9, 10)] * S))
    assert info["augmented_fraction"] == 1.0 and reward != info["reference_reward"]
    assert info["reference_reward"] == references[0] == references[1]  # the reference does not depend on the action


def test_seeds_reproduce_rewards(body):
    env = make(body)
    policy = flat([(1, 5, 10), (7, 4, 8), (10, 9, 5), (8, 2, 6), (11, 6, 3)])
    rewards = []
    for seed in (11, 11, 12):
        env.reset(seed=seed)
        rewards.append(env.step(policy)[1])
    assert rewards[0] == rewards[1] != rewards[2]
    other = make(body)
    other.reset(seed=11)
    assert other.step(policy)[1] == rewards[0]


def documented_draws(env: MetaAugmentEnv, seed: int, policy: list) -> tuple:
    """The step's tasks and augmented copies, drawn as the env documents: tasks, then the augmentation seed."""
    generator = torch.Generator().manual_seed(seed)
    task = env.sampler.sample(env.tasks_per_step, generator)
    augment_generator = torch.Generator().manual_seed(int(torch.randint(2**63 - 1, (1,), generator=generator)))
    support = task.support_inputs  # (T, n, 1, 28, 28); copy j of image i of task t is row (t, j, i)
    tasks, n = support.shape[:2]
    originals = support[:, None].expand(tasks, env.copies, *support.shape[1:]).flatten(0, 2)
    copies = augment.apply_policy(originals, torch.tensor(policy), augment_generator)
    return task, copies.view(tasks, env.copies * n, *support.shape[2:])


POLICY = [(augment.OPS.index("rotate"), 9, 10), (augment.OPS.index("erase"), 6, 7)] + [(0, 0, 0)] * (S - 2)


def test_reward_is_the_prototype_cross_entropy_by_hand(body):
    env = make(body, tasks_per_step=2, copies=2, temperature=3.0, learner="prototypes")
    env.reset(seed=5)
    _, reward, *_, info = env.step(flat(POLICY))
    task, copies = documented_draws(env, 5, POLICY)
    expected_task_rewards = []
    for t in range(2):
        images = torch.cat([task.support_inputs[t], copies[t]])
        labels = task.support_targets[t].repeat(3)
        with torch.no_grad():
            embeddings = env.learner.embed(images[None])[0]
            query = env.learner.embed(task.query_inputs[t][None])[0]
        prototypes = torch.stack([embeddings[labels == c].mean(dim=0) for c in range(5)])
        logits = -torch.cdist(query, prototypes).square() / 3.0
        expected_task_rewards.append(-float(F.cross_entropy(logits, task.query_targets[t])))
    np.testing.assert_allclose(info["task_rewards"], expected_task_rewards, rtol=1e-4)
    assert reward == pytest.approx(np.mean(expected_task_rewards), rel=1e-4)
    assert 0 <= info["accuracy"] <= 1 and info["policy"].shape == (S, 3)


def test_the_finetuned_head_is_the_pretrain_baselines_own_test_time_rule(body):
    env = make(body, tasks_per_step=2, copies=1)
    assert (env.learner.config.finetune_steps, env.learner.config.finetune_lr) == (100, 0.03)
    env.reset(seed=6)
    info = env.step(flat(POLICY))[-1]
    task, copies = documented_draws(env, 6, POLICY)

    def task_rewards(support: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        logits = env.learner.predict(support, labels, task.query_inputs)
        losses = F.cross_entropy(logits.flatten(0, 1), task.query_targets.flatten(), reduction="none")
        return -losses.view(2, -1).mean(dim=1).numpy()

    augmented = torch.cat([task.support_inputs, copies], dim=1)
    np.testing.assert_allclose(
        info["task_rewards"], task_rewards(augmented, task.support_targets.repeat(1, 2)), rtol=1e-4
    )
    np.testing.assert_allclose(  # no copies at all: the plain pretrain baseline
        info["reference_task_rewards"], task_rewards(task.support_inputs, task.support_targets), rtol=1e-4
    )


def test_invalid_actions_are_refused_clearly(body):
    env = make(body)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(3 * S, np.int64))
    env.reset(seed=0)
    good = flat([(1, 2, 3)] * S)
    cases = [
        (good[:-1], r"shape \(15,\); got shape \(14,\)"),
        (good.reshape(S, 3), r"shape \(15,\); got shape \(5, 3\)"),
        (np.where(np.arange(3 * S) == 6, 12, good), "sub-policy 2 has operation 12, outside 0..11"),
        (np.where(np.arange(3 * S) == 4, 10, good), "sub-policy 1 has magnitude bin 10, outside 0..9"),
        (np.where(np.arange(3 * S) == 14, 11, good), "sub-policy 4 has probability bin 11, outside 0..10"),
        (np.where(np.arange(3 * S) == 0, -1, good), "sub-policy 0 has operation -1"),
        (np.where(np.arange(3 * S) == 1, np.nan, good.astype(float)), "NaN or inf"),
        (good + 0.5, "non-integer"),
        (good.astype(bool), "dtype bool"),
        (np.array(["rotate"] * 3 * S), "dtype <U6"),
    ]
    for action, message in cases:
        with pytest.raises(ValueError, match=message):
            env.step(action)
    reward = env.step(good.astype(np.float32))[1]  # integral floats are bins too
    env.reset(seed=0)
    assert env.step(torch.from_numpy(good))[1] == reward
    with pytest.raises(gym.error.ResetNeeded):
        env.step(good)


def test_the_body_must_fit_the_env(body, body_v0):
    path = Path(body)
    modified = path.stat().st_mtime_ns
    assert pretrained_body(out_dir=path.parent, iterations=4) == path and path.stat().st_mtime_ns == modified  # cached
    with pytest.raises(ValueError, match="was pretrained on scheme 'vinyals', but the env uses 'lake'"):
        MetaAugmentEnv(checkpoint=body, scheme="lake")
    # a body sees the images of the env version it was pretrained on
    with pytest.raises(ValueError, match="pretrained on preprocessing 'area-105to28-ink255', but the env uses 'pillow"):
        MetaAugmentEnv(checkpoint=body_v0)
    with pytest.raises(ValueError, match="pretrained on preprocessing 'pillow-nearest-105to28-ink255', but the env"):
        gym.make("MetaAugment-Omniglot-5w1s-v0", checkpoint=body)
    with pytest.raises(ValueError, match="copies must be a positive integer"):
        make(body, copies=0)
    for env_id in ("lake", "MetaSinusoid-5shot-v0", "MetaOmniglot-5w1s-v9"):
        with pytest.raises(ValueError, match="the body is pretrained on a registered MetaOmniglot id"):
            pretrained_body(env_id)


def test_registered_v1_env_loads_its_shipped_body_and_never_trains_one(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the env must not train a body")

    monkeypatch.setattr("metabench.training.train", no_training)
    env = gym.make("MetaAugment-Omniglot-5w1s-v1", tasks_per_step=2, copies=1).unwrapped
    pinned = gym.spec("MetaAugment-Omniglot-5w1s-v1").kwargs["body_sha256"]
    assert env.protocol["body_sha256"] == pinned
    assert (augment_env.SHIPPED_BODIES / f"body-{pinned[:16]}.pt").stat().st_size < 1_000_000  # body only, no head
    env.reset(seed=0)
    assert np.isfinite(env.step(flat(POLICY))[1])
    with pytest.raises(FileNotFoundError, match="version-0 body never was"):  # v0's body was never shipped
        gym.make("MetaAugment-Omniglot-5w1s-v0")


def test_exported_bodies_round_trip_and_a_corrupt_shipped_body_is_refused(body, tmp_path, monkeypatch):
    path = augment_env.export_body(body, tmp_path)
    from_checkpoint = MetaAugmentEnv(checkpoint=body, tasks_per_step=1).protocol["body_sha256"]
    assert path.name == f"body-{from_checkpoint[:16]}.pt"
    assert MetaAugmentEnv(checkpoint=path, tasks_per_step=1).protocol["body_sha256"] == from_checkpoint
    monkeypatch.setattr(augment_env, "SHIPPED_BODIES", tmp_path)
    assert MetaAugmentEnv(body_sha256=from_checkpoint, tasks_per_step=1).protocol["body_sha256"] == from_checkpoint
    content = torch.load(path, weights_only=True)
    content["params"]["conv0.weight"] += 1.0
    torch.save(content, path)
    with pytest.raises(ValueError, match="corrupt file"):
        MetaAugmentEnv(body_sha256=from_checkpoint, tasks_per_step=1)
    with pytest.raises(ValueError, match="needs a body"):
        MetaAugmentEnv()
