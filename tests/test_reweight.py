"""MetaReweight envs: the agent weights every training example of a noisy-label task; reward = minus the clean
query loss after T steps."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import metabench  # noqa: F401  (registers the envs)
from metabench.envs.reweight import MetaReweightEnv
from metabench_baselines.reweight import (
    METHODS,
    MetaWeightNet,
    SmallLoss,
    WeightingFunction,
    l2rw,
    search_weighting_function,
    tune_small_loss,
)
from metabench_baselines.reweight import main as reweight_main


def tiny(task: str = "sinusoid", **kwargs) -> MetaReweightEnv:
    """A few steps on a small task (Omniglot: 5-way, 2 training drawings per class)."""
    if task == "omniglot":
        return MetaReweightEnv("omniglot", steps=2, k_shot=2, n_query=2, **kwargs)
    return MetaReweightEnv("sinusoid", steps=kwargs.pop("steps", 5), **kwargs)


def play(env: MetaReweightEnv, seed: int, weights) -> tuple[list[np.ndarray], list[float], dict]:
    """An episode with a fixed weight vector or a function of the observation."""
    observation, _ = env.reset(seed=seed)
    observations, rewards, terminated, info = [observation], [], False, {}
    while not terminated:
        action = weights(observation) if callable(weights) else weights
        observation, reward, terminated, truncated, info = env.step(action)
        assert not truncated
        observations.append(observation)
        rewards.append(reward)
    return observations, rewards, info


@pytest.mark.parametrize("env_id", ["MetaReweight-Sinusoid-v0", "MetaReweight-Omniglot-5w10s-v1"])
def test_registered_envs_pass_the_checker_and_record_the_noise(env_id):
    env = gym.make(env_id).unwrapped
    check_env(env, skip_render_check=True)
    assert env.protocol["noise_rate"] == 0.4 and env.protocol["noise"] in ("symmetric", "uniform")
    assert env.observation_space.shape == (env.n, len(env.feature_names))
    assert env.action_space.shape == (env.n,)


@pytest.mark.parametrize("task", ["sinusoid", "omniglot"])
def test_same_seed_same_task_and_corruption_bit_for_bit(task):
    env, other = tiny(task), tiny(task)
    env.reset(seed=3)
    other.reset(seed=3)
    for name in ("support_inputs", "support_targets", "query_inputs", "query_targets"):
        assert torch.equal(getattr(env.tasks, name), getattr(other.tasks, name))
    assert torch.equal(env.corrupted, other.corrupted)
    assert int(env.corrupted.sum()) == round(0.4 * env.n)  # an exact fraction, not a binomial draw
    first = env.corrupted.clone()
    env.reset(seed=4)
    assert not torch.equal(env.corrupted, first)
    rewards = [play(e, 3, np.ones(e.n, np.float32))[1] for e in (tiny(task), tiny(task))]
    assert rewards[0] == rewards[1]


def test_corruption_changes_exactly_the_marked_labels():
    env = tiny("omniglot")
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    task = env.sample_task(generator)
    clean = env.sampler.sample(1, torch.Generator().set_state(state))  # the same draw, before the corruption
    labels = clean.support_targets[0]
    kept = torch.ones(len(labels), dtype=torch.bool)
    for c in range(env.n_way):  # the first trusted_shots drawings of each class are the trusted set
        kept[(labels == c).nonzero()[: env.trusted_shots, 0]] = False
    clean_train = labels[kept]
    noisy = task.episode.support_targets[0]
    assert torch.equal(noisy != clean_train, task.corrupted)  # symmetric noise: every corrupted label is wrong
    assert torch.equal(task.trusted_targets[0], labels[~kept])
    assert torch.equal(task.episode.query_targets, clean.query_targets)  # the query labels stay clean


def test_noise_rate_zero_is_the_clean_task_and_pair_noise_shifts_by_one():
    env = tiny("omniglot", noise_rate=0.0)
    env.reset(seed=1)
    assert not env.corrupted.any()
    pair = tiny("omniglot", noise="pair")
    pair.reset(seed=1)
    clean = tiny("omniglot", noise_rate=0.0)
    clean.reset(seed=1)
    shifted = (clean.tasks.support_targets[0] + 1) % 5
    assert torch.equal(pair.tasks.support_targets[0][pair.corrupted], shifted[pair.corrupted])
    with pytest.raises(ValueError, match="noise"):
        MetaReweightEnv("sinusoid", noise="symmetric")
    with pytest.raises(ValueError, match="noise_rate"):
        MetaReweightEnv("sinusoid", noise_rate=1.5)


def test_bad_actions_are_refused_and_large_weights_clipped():
    env = tiny()
    env.reset(seed=0)
    n = env.n
    for bad, message in [
        (np.ones(n + 1), "shape"),
        (np.full(n, np.nan), "NaN"),
        (np.full(n, np.inf), "NaN or inf"),
        (-np.ones(n), ">= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.step(bad)
    # weights above 1 count as 1: the same episode as uniform weights
    big = play(tiny(), 0, np.full(n, 7.0, np.float32))[1]
    ones = play(tiny(), 0, np.ones(n, np.float32))[1]
    assert big == ones
    # all-zero weights: no update, the learner stays at its initialisation
    env = tiny()
    env.reset(seed=0)
    start = env.initial_params()
    for _ in range(env.steps):
        env.step(np.zeros(n, np.float32))
    assert all(torch.equal(env._params[name], start[name]) for name in start)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.ones(n, np.float32))


def test_reward_is_zero_then_minus_the_clean_query_loss_and_divergence_is_the_penalty():
    env = tiny()
    _, rewards, info = play(env, 0, np.ones(env.n, np.float32))
    assert rewards[:-1] == [0.0] * (env.steps - 1) and rewards[-1] == -info["query_loss"] < 0
    assert info["updates"] == env.steps and not info["diverged"]
    diverging = tiny(lr=1e6)
    _, rewards, info = play(diverging, 0, np.ones(diverging.n, np.float32))
    assert info["diverged"] and rewards[-1] == -diverging.divergence_penalty and math.isfinite(rewards[-1])


@pytest.mark.parametrize("task", ["sinusoid", "omniglot"])
def test_observation_holds_no_query_set_nor_clean_labels(task):
    """Changing the query set, the trusted set or which labels are corrupted leaves every observation unchanged
    (the clean labels of the corrupted examples are not even kept: the task holds the given labels)."""
    env = tiny(task)
    weights = np.linspace(0.2, 1.0, env.n, dtype=np.float32)
    observations = play(env, 5, weights)[0]
    base = env._task

    def replayed(changed) -> list[np.ndarray]:
        other = tiny(task)
        other.sample_task = lambda generator: changed  # the same noisy training set, other hidden data
        return play(other, 5, weights)[0]

    episode = base.episode
    other_query = type(episode)(
        episode.support_inputs, episode.support_targets, episode.query_inputs.flip(1), episode.query_targets.flip(1)
    )
    flipped = type(base)(other_query, ~base.corrupted, base.trusted_inputs, base.trusted_targets.flip(1))
    for a, b in zip(observations, replayed(flipped), strict=True):
        np.testing.assert_array_equal(a, b)
    assert observations[0].shape == env.observation_space.shape


@pytest.mark.parametrize("task", ["sinusoid", "omniglot"])
def test_task_functions_equal_the_env_step_loop(task):
    env = tiny(task)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(0, 1, env.n).astype(np.float32) for _ in range(env.steps)]
    observations, rewards, info = play(env, 2, lambda obs: actions[round(float(obs[0, -2]) * env.steps)])
    functions, params = env.task_functions(), env.initial_params()
    previous = torch.ones(env.n)
    for t, action in enumerate(actions):
        np.testing.assert_array_equal(env.observe(params, t, previous), observations[t])
        weights = torch.as_tensor(action)
        params = env.update(params, weights)  # differentiable (second order) here, first order in the env
        previous = weights
    assert torch.allclose(functions.query_loss(params), torch.tensor(info["query_loss"]), rtol=1e-5)
    assert env.score(params)["query_loss"] == pytest.approx(info["query_loss"], rel=1e-5)
    # the weights' meta-gradient flows through the unrolled steps
    weights = torch.ones(env.n, requires_grad=True)
    params = env.initial_params()
    for _ in range(env.steps):
        params = env.update(params, weights)
    (gradient,) = torch.autograd.grad(functions.query_loss(params), weights)
    assert gradient.shape == (env.n,) and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert functions.support_losses(params).shape == (env.n,)
    assert functions.trusted_loss(params).dim() == 0


# --- the baselines ----------------------------------------------------------------------------------------------

SINUSOID = "MetaReweight-Sinusoid-v0"


def test_small_loss_drops_the_largest_losses_and_is_tuned_on_val():
    agent = SmallLoss(SmallLoss.Config(drop=0.25), {"env_id": SINUSOID})
    observation = np.zeros((40, 4), np.float32)
    observation[:, 0] = np.arange(40)
    np.testing.assert_array_equal(agent.act(observation), (np.arange(40) < 30).astype(np.float32))
    ramped = SmallLoss(SmallLoss.Config(drop=0.5, ramp=0.5), {"env_id": SINUSOID})
    observation[:, 2] = 0.125  # a quarter of the ramp: drop 0.125 of the batch, 5 of 40
    np.testing.assert_array_equal(ramped.act(observation), (np.arange(40) < 35).astype(np.float32))
    observation[:, 2] = 0.0
    np.testing.assert_array_equal(ramped.act(observation), np.ones(40, np.float32))
    tuned, scores = tune_small_loss(SINUSOID, val_episodes=2, grid=((0.0, 0.0), (0.4, 1.0)))
    assert set(scores) == {(0.0, 0.0), (0.4, 1.0)}
    assert (tuned.config.drop, tuned.config.ramp) == max(scores, key=scores.get)


def test_weighting_function_is_searched_by_cmaes():
    agent, trace = search_weighting_function(SINUSOID, evaluations=7, episodes=1)  # one generation
    assert len(trace) == 7 and all(math.isfinite(r) for r in trace)
    low, high = WeightingFunction.bounds
    assert all(low <= c <= high for c in agent.config.coefficients)
    weights = WeightingFunction(WeightingFunction.Config([0.0, -50.0, 0.0]), {"env_id": SINUSOID}).act(
        np.array([[0.1, 0, 0, 1], [10.0, 0, 0, 1]], np.float32)
    )
    assert weights[0] > 0.99 and weights[1] < 0.01  # a steep negative slope drops the large loss


def test_meta_weight_net_meta_training_lowers_its_meta_loss():
    agent = MetaWeightNet(MetaWeightNet.Config(meta_batch=1, outer_lr=0.01), {"env_id": SINUSOID})
    agent.env.steps = 5  # a short unroll for the test
    episodes = agent.env.sampler.sample(1, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(10):
        agent.generator.manual_seed(0)  # the same corruption every time: one fixed training task
        losses.append(agent.train_step(episodes)["loss"])
    assert losses[-1] < losses[0]
    assert agent.act(np.ones((40, 4), np.float32)).shape == (40,)


def test_l2rw_gives_finite_non_negative_weights_and_trusts_the_clean_labels_more():
    env = MetaReweightEnv("omniglot", steps=3, k_shot=4, n_query=2)
    clean, corrupted = [], []
    for seed in range(5):
        observation, _ = env.reset(seed=seed)
        terminated = False
        while not terminated:
            weights = l2rw(env, observation)
            assert weights.shape == (env.n,) and np.isfinite(weights).all() and (weights >= 0).all()
            mask = env.corrupted.numpy()
            relative = weights / (weights.mean() + 1e-12)
            clean.append(relative[~mask].mean())
            corrupted.append(relative[mask].mean())
            observation, _, terminated, _, _ = env.step(weights)
    assert np.mean(corrupted) < np.mean(clean)


def test_the_comparison_scores_every_method_on_the_same_tasks(tmp_path):
    argv = ["--env", SINUSOID, "--test-episodes", "2", "--val-episodes", "1", "--cmaes-evaluations", "7"]
    argv += ["--cmaes-episodes", "1", "--mwn-iterations", "1", "--out", str(tmp_path)]
    summary = reweight_main(argv)
    for method in METHODS:
        assert math.isfinite(summary[method]["reward"][0])
    assert summary["uniform"]["reward"][0] < summary["oracle"]["reward"][0]  # 2 tasks, but far apart
    assert (tmp_path / "episodes.csv").exists() and (tmp_path / "meta-weight-net.pt").exists()


def test_tuned_agents_are_written_as_checkpoints_the_harness_scores(tmp_path):
    """--checkpoints: each gym agent as a checkpoint with its tuning budget; the test protocol's gym loop gives
    the small-loss agent the same rewards as the comparison's own loop on the same tasks."""
    from metabench.checkpoints import load_checkpoint
    from metabench.evaluation import evaluate

    argv = ["--env", SINUSOID, "--methods", "uniform", "small-loss", "--val-episodes", "1", "--checkpoints"]
    reweight_main([*argv, "--test-episodes", "2", "--out", str(tmp_path)])
    compared = {}
    for line in (tmp_path / "episodes.csv").read_text().splitlines()[1:]:
        policy, episode, reward = line.split(",")[:3]
        compared.setdefault(policy, []).append(float(reward))
    for method, name in (("uniform", "uniform-weights"), ("small-loss", "small-loss")):
        learner, state = load_checkpoint(tmp_path / method / "checkpoint.pt")
        assert learner.name == name and state["env_id"] == SINUSOID
        _, records = evaluate(learner, SINUSOID, n_episodes=2, progress=False)
        assert [record["reward"] for record in records] == pytest.approx(compared[method])
    _, state = load_checkpoint(tmp_path / "small-loss" / "checkpoint.pt")
    assert state["iteration"] == 19 and state["training"]["episodes_seen"] == 19  # 19 grid points of 1 val task
    assert reweight_main([*argv, "--test-episodes", "0", "--out", str(tmp_path / "only")])["uniform"]["seconds"] >= 0
    assert not (tmp_path / "only" / "episodes.csv").exists()


def test_the_example_trains_meta_weight_net_and_compares_it_with_uniform(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    result = importlib.import_module("examples.reweight_meta_weight_net").main(["--iterations", "1", "--episodes", "2"])
    assert len(result["history"]) == 1 and math.isfinite(result["summary"]["meta-weight-net"]["minus_uniform"][0])
