"""Long runs in slices: early stopping keeps the best validation, a run resumes from a fresh clone of the
repository exactly where it stopped, and the checkpoint says where the time went."""

from __future__ import annotations

import shutil
import subprocess

import torch

from metabench.training import inference_state, load_checkpoint, train

TINY = {"width": 8, "train_way": 10}


def test_early_stopping_keeps_the_best_validation_and_stops_after_patience(tmp_path):
    """The run stops at the first validation that makes `patience` in a row without a better val reward; best.pt
    is the best one's network, inference-only (lr=0: the weights never move, only batch-norm statistics do)."""
    path = train(
        "protonet",
        "MetaOmniglot-5w1s-v1",
        tmp_path,
        iterations=1000,
        config={**TINY, "lr": 0.0},
        val_interval=2,
        val_episodes=5,
        patience=2,
        progress=False,
    )
    state = torch.load(path, weights_only=True)
    history, stopping = state["history"], state["early_stopping"]
    rewards = [row["val_reward"] for row in history]
    best = rewards.index(max(rewards))
    assert stopping == {"patience": 2, "best_iteration": history[best]["iteration"], "stopped": True}
    assert len(rewards) == best + 3 and state["iteration"] == history[-1]["iteration"] < 1000
    running, since = rewards[0], 0  # no earlier validation completed a stretch of `patience` without improvement
    for reward in rewards[1:-1]:
        running, since = (reward, 0) if reward > running else (running, since + 1)
        assert since < 2
    best_pt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best_pt["inference_only"] and best_pt["iteration"] == history[best]["iteration"]
    assert "optimizer" not in best_pt["learner"] and "generator" not in best_pt
    assert (tmp_path / "best.pt").stat().st_size < path.stat().st_size / 2
    learner, _ = load_checkpoint(tmp_path / "best.pt")
    for name, value in inference_state(learner)["params"].items():
        assert torch.equal(value, state["learner"]["params"][name])

    again = train("protonet", "MetaOmniglot-5w1s-v1", tmp_path, iterations=1000, val_interval=2, progress=False)
    assert torch.load(again, weights_only=True)["iteration"] == state["iteration"]  # a stopped run trains no further


def test_an_improving_run_moves_best_pt_forward(tmp_path):
    train(
        "protonet",
        "MetaOmniglot-5w1s-v1",
        tmp_path,
        iterations=6,
        config=TINY,
        val_interval=3,
        val_episodes=5,
        patience=5,
        progress=False,
    )
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    rewards = {row["iteration"]: row["val_reward"] for row in state["history"]}
    best = state["early_stopping"]["best_iteration"]
    assert rewards[best] == max(rewards.values()) and not state["early_stopping"]["stopped"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["iteration"] == best


def test_a_run_resumes_from_a_fresh_clone_exactly(tmp_path):
    """Slice 1 runs in one repository and is committed; slice 2 runs in a fresh clone on the committed state.
    The result equals one uninterrupted run, and the slices are recorded with their iterations and seconds."""
    settings = {"config": TINY, "val_interval": 2, "val_episodes": 5, "patience": 10, "progress": False}
    straight = train("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "straight", iterations=6, **settings)

    origin = tmp_path / "origin"
    run = origin / "reproductions" / "MetaOmniglot-5w1s-v1" / "protonet-seed0"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    train("protonet", "MetaOmniglot-5w1s-v1", run, iterations=4, **settings)
    subprocess.run([*git, "-C", str(origin), "add", "."], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-q", "-m", "slice 1"], check=True)
    shutil.rmtree(origin / "reproductions")  # nothing of slice 1 survives but what was committed

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    resumed = train(
        "protonet",
        "MetaOmniglot-5w1s-v1",
        clone / "reproductions" / "MetaOmniglot-5w1s-v1" / "protonet-seed0",
        iterations=6,
        **settings,
    )
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    for name, value in a["learner"]["params"].items():
        assert torch.equal(value, b["learner"]["params"][name]), name
    assert [row["val_reward"] for row in a["history"]] == [row["val_reward"] for row in b["history"]]
    slices = b["training"]["slices"]
    assert [(s["start_iteration"], s["end_iteration"]) for s in slices] == [(0, 4), (4, 6)]
    assert all(s["cpu_seconds"] > 0 and s["wall_seconds"] > 0 and s["threads"] >= 1 for s in slices)
    assert b["training"]["cpu_seconds"] > 0 and b["training"]["episodes_seen"] == 6
