"""stable-baselines3 agents run on metabench environments as they are."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO

import metabench  # noqa: F401


def run_ppo(env_id: str, steps: int) -> PPO:
    env = gym.make(env_id)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=steps)
    return model


def test_ppo_runs_on_sinusoid():
    model = run_ppo("MetaSinusoid-5shot", 320)
    assert model.num_timesteps >= 320
    env = gym.make("MetaSinusoid-5shot")
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    _, reward, terminated, _, _ = env.step(action)
    assert terminated and np.isfinite(reward)


def test_ppo_runs_on_omniglot_5w1s():
    model = run_ppo("MetaOmniglot-5w1s", 256)
    assert model.num_timesteps >= 256
    env = gym.make("MetaOmniglot-5w1s")
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    _, reward, _, _, info = env.step(action)
    assert np.isfinite(reward) and 0.0 <= info["accuracy"] <= 1.0
