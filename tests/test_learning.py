"""MAML, first-order MAML and Prototypical Networks learn within a short CPU run."""

from __future__ import annotations

import pytest

from metabench.checkpoints import load_checkpoint
from metabench.training import train


@pytest.mark.parametrize(
    ("name", "iterations", "config", "threshold"),
    [
        ("maml", 30, {"meta_batch": 4, "width": 32}, 0.4),
        ("fomaml", 30, {"meta_batch": 4, "width": 32}, 0.4),
        ("protonet", 30, {"train_way": 20, "width": 32}, 0.6),
    ],
)
def test_learner_beats_chance_on_validation_tasks(tmp_path, name, iterations, config, threshold):
    path = train(
        name,
        "MetaOmniglot-5w1s-v0",
        tmp_path,
        iterations=iterations,
        config=config,
        val_interval=iterations,
        val_episodes=100,
        progress=False,
    )
    _, checkpoint = load_checkpoint(path)
    accuracy = checkpoint["history"][-1]["val_accuracy"]
    assert accuracy > threshold, f"{name}: validation accuracy {accuracy:.3f} after {iterations} iterations"
