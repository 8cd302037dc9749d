"""Long runs in slices: early stopping keeps the best validation, a run resumes from a fresh clone of the
repository exactly where it stopped, and the checkpoint says where the time went."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from metabench.checkpoints import inference_state, load_checkpoint
from metabench.training import train

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


def test_a_protonet_validated_on_5_way_is_scored_on_the_20_way_board(tmp_path):
    """As the paper does: one 1-shot model, two boards. The moved checkpoint is the 20-way board's, says where
    it was trained, and scores as the same weights built for 20-way by hand; other shots and learners refuse."""
    from metabench.checkpoints import build_learner
    from metabench.evaluation import evaluate, evaluate_checkpoint

    path = train(
        "protonet", "MetaOmniglot-5w1s-v1", tmp_path / "run", iterations=2, config=TINY, val_episodes=5, progress=False
    )
    summary, out = evaluate_checkpoint(path, "MetaOmniglot-20w1s-v1", n_episodes=10, progress=False)
    moved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert moved["env_id"] == summary["env_id"] == "MetaOmniglot-20w1s-v1" and moved["inference_only"]
    assert summary["training"]["trained_on"] == "MetaOmniglot-5w1s-v1" and summary["training"]["iterations"] == 2

    by_hand = build_learner("protonet", "MetaOmniglot-20w1s-v1", TINY)
    by_hand.load_state_dict({**by_hand.state_dict(), **inference_state(load_checkpoint(path)[0])})
    expected, _ = evaluate(by_hand, "MetaOmniglot-20w1s-v1", n_episodes=10, progress=False)
    assert summary["results"]["reward_mean"] == expected["results"]["reward_mean"]
    assert summary["results"]["accuracy_mean"] == expected["results"]["accuracy_mean"]

    with pytest.raises(ValueError, match="differ beyond n_way"):
        evaluate_checkpoint(path, "MetaOmniglot-20w5s-v1", n_episodes=10, out_dir=tmp_path / "x", progress=False)
    maml = train(
        "maml",
        "MetaOmniglot-5w1s-v1",
        tmp_path / "maml",
        iterations=1,
        config={"width": 8},
        val_episodes=5,
        progress=False,
    )
    with pytest.raises(ValueError, match="cannot move to another way"):
        evaluate_checkpoint(maml, "MetaOmniglot-20w1s-v1", n_episodes=10, out_dir=tmp_path / "y", progress=False)


def test_the_maml_family_trains_on_k_queries_per_class_and_tests_on_15():
    """MAML's code draws K queries per class for the meta-update (1 in 5-way 1-shot); the protocol tests on 15."""
    from metabench.checkpoints import build_learner
    from metabench.envs import make_env

    for name in ("maml", "fomaml", "anil"):
        learner = build_learner(name, "MetaOmniglot-5w1s-v1", {"width": 8})
        sampler = make_env("MetaOmniglot-5w1s-v1", split="train", **learner.train_env_kwargs()).sampler
        episodes = sampler.sample(2, torch.Generator().manual_seed(0))
        assert episodes.query_inputs.shape[1] == 5 * 1, name
    five_shot = build_learner("maml", "MetaOmniglot-5w5s-v1", {"width": 8, "train_query": 3})
    assert five_shot.train_env_kwargs() == {"n_query": 3}
    assert build_learner("maml", "MetaOmniglot-5w5s-v1", {"width": 8}).train_env_kwargs() == {"n_query": 5}
    assert make_env("MetaOmniglot-5w1s-v1", split="test").protocol["n_query"] == 15


def test_the_conv4_pools_before_its_relu_with_the_same_values_and_gradients():
    """The one Conv-4 path (models.conv4, and nas.forward on CONV4, which ProtoNets uses) max-pools before the
    ReLU for speed: outputs and gradients equal, bit for bit, those of the textbook order."""
    import torch.nn.functional as F

    from metabench import models, nas

    def textbook(params, images):  # conv -> batch norm -> ReLU -> max-pool, one task
        h = images[0]
        for layer in range(4):
            h = F.conv2d(h, params[f"conv{layer}.weight"][0], params[f"conv{layer}.bias"][0], padding=1)
            h = F.batch_norm(h, None, None, params[f"norm{layer}.weight"][0], params[f"norm{layer}.bias"][0], True)
            h = F.max_pool2d(F.relu(h), 2)
        return h.flatten(1)[None]

    images = torch.rand(1, 12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    params = {
        name: value[None].clone().requires_grad_()
        for name, value in models.conv4_init(None, torch.Generator().manual_seed(1), width=16).items()
    }
    expected = textbook(params, images)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(params.values()))
    for output in (models.conv4(params, images), nas.forward(nas.conv4(16), params, images)):
        grads = torch.autograd.grad(output.square().sum(), list(params.values()))
        assert torch.equal(output, expected)
        assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads, strict=True))


def test_the_inner_loops_adam_rule_is_adam():
    """metabench.inner_loop.Adam (TensorFlow's form, Reptile's inner optimiser) takes torch.optim.Adam's steps
    (the two forms agree exactly when eps = 0), keeping its moments across calls of adapt."""
    from metabench.inner_loop import Adam, adapt

    target = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    start = {"w": torch.zeros(3, 4)}

    def loss(params):
        return (params["w"] - target).pow(4).sum()

    state = Adam.fresh_state(start)
    params = {"w": start["w"].clone()}
    for _ in range(3):  # three calls of two steps: the moments carry over
        params = adapt(
            {"w": params["w"].requires_grad_()}, loss, 2, 0.0, first_order=True, rule=Adam(state, 0.01, eps=0)
        )
        params = {"w": params["w"].detach()}
    reference = start["w"].clone().requires_grad_()
    optimizer = torch.optim.Adam([reference], lr=0.01, betas=(0.0, 0.999), eps=0)
    for _ in range(6):
        optimizer.zero_grad()
        loss({"w": reference}).backward()
        optimizer.step()
    assert int(state["step"]) == 6
    torch.testing.assert_close(params["w"], reference.detach(), rtol=1e-5, atol=1e-7)


def test_score_py_reads_test_only_for_a_run_that_has_ended(tmp_path):
    """reproductions/score.py refuses a run that can still train (the test split is read once per finished run)
    and treats an early-stopped one, or one at its --iterations, as ended; its notes give the whole run."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "reproductions" / "score.py"
    spec = importlib.util.spec_from_file_location("score", script)
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)

    run = tmp_path / "MetaOmniglot-5w1s-v1" / "protonet-seed0"
    settings = {"config": {**TINY, "lr": 0.0}, "val_interval": 2, "val_episodes": 5, "progress": False}
    train("protonet", "MetaOmniglot-5w1s-v1", run, iterations=4, patience=50, **settings)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    last = state["training"]["slices"][-1]
    assert last["planned_iterations"] == 4 and score.ended(state)  # every planned iteration done
    assert score.milestone(state) == ""  # with early stopping the best validation's model is scored
    last["planned_iterations"] = 1000  # as a slice stopped by Ctrl-C or its time budget leaves it
    torch.save(state, run / "checkpoint.pt")
    assert not score.ended(state)
    refused = subprocess.run(
        [sys.executable, str(script), "protonet", "MetaOmniglot-5w1s-v1", "0", "--runs", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "has not ended (iteration 4)" in refused.stderr
    assert not list(run.glob("test-*"))  # nothing was scored
    del last["planned_iterations"]
    last["command"] = "metabench train protonet --iterations 4 --patience 50"
    assert score.ended(state)  # a slice from before planned_iterations was recorded: its command says

    stopped = torch.load(
        train("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "stops", iterations=1000, patience=2, **settings),
        weights_only=True,
    )
    assert stopped["early_stopping"]["stopped"] and score.ended(stopped) and score.milestone(stopped) == ""
    best = stopped["early_stopping"]["best_iteration"]
    assert f"{stopped['iteration']:,} iterations x 1 = " in score.notes(stopped)
    assert f"the best validation's (iteration {best:,})" in score.notes(stopped)
    maml = {**settings, "config": {"width": 8, "meta_batch": 2}}
    plain = torch.load(
        train("maml", "MetaOmniglot-5w1s-v1", tmp_path / "maml", iterations=2, **maml), weights_only=True
    )
    assert score.ended(plain) and score.milestone(plain) == "-2it"  # resumed further, it is another entry
    recipes = (script.parent / "run.sh").read_text().split("case $method in")[1].split("*)")[0]
    methods = {m.strip() for line in recipes.splitlines() if ")" in line for m in line.split(")")[0].split("|")}
    assert methods == set(score.SOURCES)  # every recipe can be scored, citing its paper and code
    assert all((script.parents[1] / code).is_file() for _, code in score.SOURCES.values())
