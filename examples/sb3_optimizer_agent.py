"""A reinforcement-learning agent off the shelf: stable-baselines3 PPO learns an optimizer's learning rates.

In ``MetaOptimizer-Sinusoid-v0`` an episode trains a small MLP on one sinusoid task for 10 SGD steps; at
each step the agent observes training statistics (support loss, gradient and parameter norms, ...) and
chooses the per-layer log10 learning rates. The reward is minus the query loss after the last step.
Every metabench env is a plain Gymnasium env, so SB3 trains on it as it is, and the agent is scored
with the plain gym loop, here against SGD with the fixed learning rate 10**-2.5 on the same tasks.

Run: ``python examples/sb3_optimizer_agent.py [--timesteps 20000]`` (the default is a smoke-test budget;
the README's PPO row used 20k steps). ``baselines/ppo.py`` wraps the same agent as a metabench ``Learner``
so that ``metabench evaluate`` and the leaderboard can score it.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import metabench  # noqa: F401  (registers the environments)


def play(env: gym.Env, policy, seed: int) -> float:
    """One episode from ``env.reset(seed=seed)``, acting with ``policy(observation)``; returns its total reward."""
    observation, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(policy(observation))
        total += float(reward)
        done = terminated or truncated
    return total


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="MetaOptimizer-Sinusoid-v0")
    parser.add_argument("--timesteps", type=int, default=256, help="PPO environment steps (10 per episode)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = gym.make(args.env)
    # PPO's Gaussian policy starts around 0 and works best on actions in [-1, 1]: rescale the env's [-5, 1]
    # (log10 learning rates) to it, so the untrained policy starts near lr 10**-2 instead of 10**0.
    rescaled = gym.wrappers.RescaleAction(env, min_action=np.float32(-1), max_action=np.float32(1))
    # A small rollout buffer so that even the tiny default budget makes PPO updates.
    model = PPO("MlpPolicy", rescaled, n_steps=128, batch_size=64, seed=args.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=args.timesteps)

    # The plain gym loop on fixed, seeded tasks (the harness's test seeds 2026 + i), for PPO and for SGD.
    seeds = [2026 + i for i in range(args.episodes)]
    ppo = [play(rescaled, lambda obs: model.predict(obs, deterministic=True)[0], seed) for seed in seeds]
    sgd_action = np.full(env.action_space.shape, -2.5, dtype=np.float32)  # log10 learning rate of every layer
    sgd = [play(env, lambda obs: sgd_action, seed) for seed in seeds]
    result = {"timesteps": model.num_timesteps, "ppo_reward": float(np.mean(ppo)), "sgd_reward": float(np.mean(sgd))}
    print(
        f"{args.env}: PPO after {result['timesteps']} steps: mean reward {result['ppo_reward']:.3f}; "
        f"SGD at lr 10^-2.5: {result['sgd_reward']:.3f} ({args.episodes} episodes)"
    )
    return result


if __name__ == "__main__":
    main()
