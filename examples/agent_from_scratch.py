"""An agent written from scratch: nearest class mean on raw pixels, on MetaOmniglot-5w1s, with gymnasium and numpy only.

Run: ``python examples/agent_from_scratch.py [--episodes 20]``. Chance is 20% on 5-way tasks.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import metabench  # noqa: F401  (registers the environments)


def act(observation: dict, n_way: int) -> np.ndarray:
    """Logits for every query: minus its squared pixel distance to each class's mean support image."""
    support = observation["support_images"].reshape(len(observation["support_labels"]), -1) / 255.0
    query = observation["query_images"].reshape(len(observation["query_images"]), -1) / 255.0
    means = np.stack([support[observation["support_labels"] == label].mean(axis=0) for label in range(n_way)])
    distances = ((query[:, None, :] - means[None]) ** 2).sum(axis=-1)  # (queries, n_way)
    return (-distances / 40.0).astype(np.float32)  # the temperature 40 turns distances into calibrated logits


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="MetaOmniglot-5w1s-v1")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args(argv)
    env = gym.make(args.env, split="val")  # one episode = one task; reward = minus the query cross-entropy
    rewards, accuracies = [], []
    for episode in range(args.episodes):
        observation, _ = env.reset(seed=episode)
        _, reward, _, _, info = env.step(act(observation, n_way=env.action_space.shape[1]))
        rewards.append(reward)
        accuracies.append(info["accuracy"])
    result = {"reward": float(np.mean(rewards)), "accuracy": float(np.mean(accuracies))}
    print(f"{args.env}: mean reward {result['reward']:.3f}, accuracy {result['accuracy']:.1%} (chance: 20% on 5-way)")
    return result


if __name__ == "__main__":
    main()
