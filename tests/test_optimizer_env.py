"""MetaOptimizer envs: the agent sets per-layer learning rates; reward = minus the query loss after T steps."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3.common.env_checker as sb3_checker
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

import metabench  # noqa: F401  (registers the envs)
from metabench import models
from metabench.envs.optimizer import LOG10_LR_BOUNDS, MetaOptimizerEnv
from metabench.envs.sinusoid import MetaSinusoidEnv
from metabench.episodes import Episodes
from metabench.inner_loop import adapt


def sinusoid_env(**kwargs) -> MetaOptimizerEnv:
    return MetaOptimizerEnv("sinusoid", **kwargs)


def random_actions(env: MetaOptimizerEnv, seed: int, low: float = -3.0, high: float = -1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, env.action_space.shape).astype(np.float32) for _ in range(env.steps)]


def run(env: MetaOptimizerEnv, seed: int, actions: list[np.ndarray]) -> tuple[list, list[float], list[dict]]:
    observation, info = env.reset(seed=seed)
    observations, rewards, infos = [observation], [], [info]
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        infos.append(info)
        assert not truncated
        if terminated:
            break
    assert terminated
    return observations, rewards, infos


class FixedTask:
    """A sampler that always returns the same task (to vary the query set by hand)."""

    def __init__(self, episodes: Episodes) -> None:
        self.episodes = episodes

    def sample(self, batch_size: int, generator: torch.Generator) -> Episodes:
        return self.episodes


@pytest.mark.parametrize(
    ("env_id", "layers"), [("MetaOptimizer-Sinusoid-v0", 3), ("MetaOptimizer-Omniglot-5w1s-v0", 5)]
)
def test_registered_ids_spaces_and_checkers(env_id, layers):
    env = gym.make(env_id, steps=2)
    unwrapped = env.unwrapped
    assert env.action_space.shape == (layers,) and env.observation_space.shape == (3 * layers + 2,)
    assert len(unwrapped.observation_names) == 3 * layers + 2
    assert (env.action_space.low == LOG10_LR_BOUNDS[0]).all() and (env.action_space.high == LOG10_LR_BOUNDS[1]).all()
    assert np.isfinite(env.observation_space.low).all() and np.isfinite(env.observation_space.high).all()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "(?s).*symmetric and normalized")  # both prefer actions in [-1, 1]
        check_env(unwrapped, skip_render_check=True)
        sb3_checker.check_env(unwrapped)
    assert gym.spec(env_id).kwargs["steps"] == 10


def test_observation_never_sees_the_query_set():
    env = sinusoid_env(steps=4, reward_mode="delta")
    task = env.sampler.sample(1, torch.Generator().manual_seed(0))
    other_query = Episodes(task.support_inputs, task.support_targets, -task.query_inputs, 3 * task.query_targets)
    actions = random_actions(env, 0)
    runs = []
    for episodes in (task, other_query):
        env.sampler = FixedTask(episodes)
        runs.append(run(env, 0, actions))
    (observations_a, rewards_a, infos_a), (observations_b, rewards_b, infos_b) = runs
    for a, b in zip(observations_a, observations_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert infos_a[:-1] == infos_b[:-1] == [{}] * env.steps  # reset and intermediate steps reveal nothing
    assert rewards_a != rewards_b  # the reward, and only the reward, depends on the query set
    assert "query_targets" in infos_a[-1]


def test_reward_is_the_query_mse_after_the_same_sgd_steps_by_hand():
    env = sinusoid_env(steps=5)
    actions = random_actions(env, 1)
    _, rewards, infos = run(env, 3, actions)
    assert rewards[:-1] == [0.0] * 4

    task = MetaSinusoidEnv(k_shot=10, n_query=10).sampler.sample(1, torch.Generator().manual_seed(3))
    params = models.mlp_init(torch.Generator().manual_seed(0))  # the documented init: seed 0
    for action in actions:
        params = {name: value.clone().requires_grad_() for name, value in params.items()}
        loss = (models.mlp(models.expand(params, 1), task.support_inputs) - task.support_targets).square().mean()
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            params = {
                name: value - 10.0 ** float(action[int(name[2])]) * grad
                for (name, value), grad in zip(params.items(), grads, strict=True)
            }
    query_mse = (models.mlp(models.expand(params, 1), task.query_inputs) - task.query_targets).square().mean()
    assert rewards[-1] == pytest.approx(-float(query_mse), rel=1e-5)
    assert infos[-1]["query_losses"].mean() == pytest.approx(-rewards[-1], rel=1e-5)
    assert infos[-1]["diverged"] is False and infos[-1]["query_loss"] == -rewards[-1]


def test_omniglot_reward_is_the_query_cross_entropy_by_hand():
    env = gym.make("MetaOptimizer-Omniglot-5w1s-v0", steps=2).unwrapped
    actions = [np.array([-1.0, -0.5, -1.5, -1.0, -0.3], np.float32), np.full(5, -0.7, np.float32)]
    _, rewards, infos = run(env, 5, actions)

    task = env.sampler.sample(1, torch.Generator().manual_seed(5))
    params = models.conv4_init(5, torch.Generator().manual_seed(0), downsample="maxpool")
    layer = {"conv0": 0, "conv1": 1, "conv2": 2, "conv3": 3, "head": 4}
    for action in actions:
        params = {name: value.clone().requires_grad_() for name, value in params.items()}
        logits = models.conv4(models.expand(params, 1), task.support_inputs)
        grads = torch.autograd.grad(F.cross_entropy(logits[0], task.support_targets[0]), list(params.values()))
        with torch.no_grad():
            params = {
                name: value - 10.0 ** float(action[layer[name.split(".")[0].replace("norm", "conv")]]) * grad
                for (name, value), grad in zip(params.items(), grads, strict=True)
            }
    logits = models.conv4(models.expand(params, 1), task.query_inputs)[0]
    assert rewards[-1] == pytest.approx(-float(F.cross_entropy(logits, task.query_targets[0])), rel=1e-4)
    assert 0.0 <= infos[-1]["accuracy"] <= 1.0 and infos[-1]["query_labels"].shape == (75,)


def test_differentiable_task_matches_the_gym_path_and_backpropagates():
    env = sinusoid_env(steps=4)
    actions = random_actions(env, 2)
    _, rewards, _ = run(env, 7, actions)

    functions = env.task_functions()
    log10_lrs = torch.tensor(np.stack(actions), requires_grad=True)
    params = env.initial_params()
    for step in range(env.steps):
        params = adapt(params, functions.support_loss, 1, env.learning_rates(log10_lrs[step]))
    query_loss = functions.query_loss(params)
    assert query_loss.item() == pytest.approx(-rewards[-1], rel=1e-5)
    query_loss.backward()  # meta-gradient of the final query loss through the unrolled inner loop
    assert log10_lrs.grad is not None and torch.isfinite(log10_lrs.grad).all() and log10_lrs.grad.abs().sum() > 0
    # a leading task dimension of 1 is accepted too
    batched = {name: value.unsqueeze(0) for name, value in params.items()}
    assert functions.query_loss(batched).item() == pytest.approx(query_loss.item(), rel=1e-6)


def test_delta_rewards_telescope_to_the_final_objective():
    actions = random_actions(sinusoid_env(), 4)
    _, final_rewards, final_infos = run(sinusoid_env(), 11, actions)
    _, delta_rewards, delta_infos = run(sinusoid_env(reward_mode="delta"), 11, actions)
    initial, last = delta_infos[-1]["initial_query_loss"], delta_infos[-1]["query_loss"]
    assert sum(delta_rewards) == pytest.approx(initial - last, rel=1e-9, abs=1e-9)
    assert sum(delta_rewards) == pytest.approx(final_rewards[-1] + initial, rel=1e-6)
    assert last == pytest.approx(final_infos[-1]["query_loss"], rel=1e-6)


@pytest.mark.parametrize("reward_mode", ["final", "delta"])
def test_a_diverging_learner_ends_with_the_bounded_penalty(reward_mode):
    env = sinusoid_env(reward_mode=reward_mode)
    high = np.full(env.action_space.shape, LOG10_LR_BOUNDS[1], np.float32)
    observations, rewards, infos = run(env, 0, [high] * env.steps)
    assert len(rewards) < env.steps and infos[-1]["diverged"] is True
    assert env.divergence_penalty == 125.0 and infos[-1]["query_loss"] == 125.0
    assert all(math.isfinite(reward) for reward in rewards)
    if reward_mode == "final":
        assert rewards[-1] == -125.0
    else:
        assert sum(rewards) == pytest.approx(infos[-1]["initial_query_loss"] - 125.0)
    for observation in observations:
        assert np.isfinite(observation).all() and env.observation_space.contains(observation)


def test_non_finite_parameters_are_divergence_not_nan():
    env = sinusoid_env(steps=3, init={name: value * 1e12 for name, value in sinusoid_env().initial_params().items()})
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    observation, reward, terminated, _, info = env.step(np.ones(3, np.float32))
    assert terminated and info["diverged"] and reward == -env.divergence_penalty
    assert env.observation_space.contains(observation)


def test_seeds_reproduce_episodes_and_tasks_match_the_base_env():
    actions = random_actions(sinusoid_env(), 5)
    first, second = run(sinusoid_env(), 42, actions), run(sinusoid_env(), 42, actions)
    for a, b in zip(first[0], second[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert first[1] == second[1]
    assert run(sinusoid_env(), 43, actions)[1] != first[1]

    observation, _ = sinusoid_env().reset(seed=42)
    base_observation, _ = MetaSinusoidEnv(k_shot=10, n_query=10).reset(seed=42)
    x, y = (torch.as_tensor(base_observation[key])[None] for key in ("support_x", "support_y"))
    with torch.no_grad():
        by_hand = (models.mlp(models.expand(sinusoid_env().initial_params(), 1), x) - y).square().mean()
    assert observation[0] == pytest.approx(float(by_hand), rel=1e-6)  # the same task as MetaSinusoid's seed 42


def test_bad_actions_and_misuse_are_refused():
    env = sinusoid_env(steps=2)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(3, np.float32))
    env.reset(seed=0)
    for bad in (np.zeros(4, np.float32), np.array([0.0, np.nan, 0.0]), np.array(["a", "b", "c"])):
        with pytest.raises(ValueError, match=r"\(3,\)|NaN"):
            env.step(bad)
    # finite actions beyond the bounds are clipped into them
    clipped = run(sinusoid_env(steps=2), 0, [np.array([-9.0, -2.0, 0.5], np.float32)] * 2)
    inside = run(sinusoid_env(steps=2), 0, [np.array([-5.0, -2.0, 0.5], np.float32)] * 2)
    assert clipped[1] == inside[1] and clipped[0][-1][-3] == -5.0
    env.step(np.zeros(3, np.float32))
    env.step(np.zeros(3, np.float32))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(3, np.float32))


def test_a_given_initialisation_is_used_and_checked():
    start = {name: value.detach() * 0.5 for name, value in sinusoid_env().initial_params().items()}
    env = sinusoid_env(init=start)
    assert all(torch.equal(env.initial_params()[name], start[name]) for name in start)
    with pytest.raises(ValueError, match="missing"):
        sinusoid_env(init={key: value for key, value in start.items() if key != "fc2.bias"})
    with pytest.raises(ValueError, match="shape"):
        sinusoid_env(init={**start, "fc0.weight": torch.zeros(41, 1)})
    with pytest.raises(ValueError, match="NaN"):
        sinusoid_env(init={**start, "fc0.bias": torch.full((40,), float("nan"))})


def test_harness_attributes_explicit_tasks_and_the_off_env_unroll_match_the_gym_path():
    env = sinusoid_env(steps=4)
    assert env.horizon == env.steps == 4 and env.tasks is None
    actions = random_actions(env, 6)
    observations, rewards, infos = run(env, 9, actions)
    assert len(env.tasks) == 1

    # the same task drawn from the sampler, given explicitly, on a fresh env that was never reset
    task = env.sampler.sample(1, torch.Generator().manual_seed(9))
    fresh = sinusoid_env(steps=4)
    functions = fresh.task_functions(task)
    params, previous = fresh.initial_params(), np.zeros(3, np.float32)
    for t, action in enumerate(actions):
        np.testing.assert_array_equal(fresh.observe(params, t, previous, task), observations[t])
        params = adapt(params, functions.support_loss, 1, fresh.learning_rates(action))
        previous = action
        assert not fresh.diverged(params, task)
    np.testing.assert_array_equal(fresh.observe(params, 4, previous, task), observations[-1])
    score = fresh.score(params, episodes=task)
    assert score["query_loss"] == pytest.approx(-rewards[-1], rel=1e-6) and score["diverged"] is False
    np.testing.assert_allclose(score["query_losses"], infos[-1]["query_losses"], rtol=1e-5)

    with pytest.raises(ValueError, match="exactly one task"):
        fresh.task_functions(env.sampler.sample(2, torch.Generator().manual_seed(0)))
    with pytest.raises(gym.error.ResetNeeded):
        fresh.task_functions()
    with pytest.raises(ValueError, match="t must be"):
        fresh.observe(params, 5, previous, task)


def test_a_diverged_omniglot_episode_reports_zero_accuracy():
    env = gym.make("MetaOptimizer-Omniglot-5w1s-v0", steps=3).unwrapped
    _, rewards, infos = run(env, 0, [np.full(5, LOG10_LR_BOUNDS[1], np.float32)] * 3)
    assert infos[-1]["diverged"] is True and infos[-1]["accuracy"] == 0.0
    assert rewards[-1] == -env.divergence_penalty == pytest.approx(-10 * math.log(5))
    assert env.diverged({name: value * float("nan") for name, value in env.initial_params().items()})
