"""Training harness and evaluation protocol: resume is exact, checkpoints are safe, evaluation is deterministic."""

from __future__ import annotations

import json
import os
import pickle
import signal

import pytest
import torch

from metabench import evaluation
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.cli import main
from metabench.envs import OMNIGLOT_V1_MANIFESTS
from metabench.evaluation import evaluate
from metabench.learners import load_learner_class
from metabench.training import VAL_SEED, TrainingInterrupted, progress_bar, train

SMALL = {"width": 8, "meta_batch": 2}


def params_of(path):
    learner, checkpoint = load_checkpoint(path)
    return learner.state_dict()["params"], checkpoint


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    straight = train(
        "maml",
        "MetaOmniglot-5w1s-v0",
        tmp_path / "a",
        iterations=6,
        config=SMALL,
        val_interval=3,
        val_episodes=10,
        progress=False,
    )
    train(
        "maml",
        "MetaOmniglot-5w1s-v0",
        tmp_path / "b",
        iterations=3,
        config=SMALL,
        val_interval=3,
        val_episodes=10,
        progress=False,
    )
    resumed = train(
        "maml",
        "MetaOmniglot-5w1s-v0",
        tmp_path / "b",
        iterations=6,
        config=SMALL,
        val_interval=3,
        val_episodes=10,
        progress=False,
    )
    a, checkpoint_a = params_of(straight)
    b, checkpoint_b = params_of(resumed)
    assert checkpoint_a["iteration"] == checkpoint_b["iteration"] == 6
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [row["val_accuracy"] for row in checkpoint_a["history"]] == [
        row["val_accuracy"] for row in checkpoint_b["history"]
    ]
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,episodes,wall_seconds,cpu_seconds,train_loss,val_accuracy")
    assert [line.split(",")[0] for line in log[1:]] == ["0", "3", "6"]  # a validation at iteration 0
    assert (tmp_path / "b" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_resuming_into_another_runs_folder_is_refused(tmp_path):
    train(
        "maml",
        "MetaOmniglot-5w1s-v0",
        tmp_path,
        iterations=1,
        config=SMALL,
        val_interval=1,
        val_episodes=5,
        progress=False,
    )
    with pytest.raises(ValueError, match="not protonet on MetaOmniglot-5w1s-v0"):
        train("protonet", "MetaOmniglot-5w1s-v0", tmp_path, iterations=1, progress=False)


def test_checkpoints_load_without_unpickling_objects(tmp_path):
    path = train(
        "maml",
        "MetaOmniglot-5w1s-v0",
        tmp_path,
        iterations=1,
        config=SMALL,
        val_interval=1,
        val_episodes=5,
        progress=False,
    )
    torch.load(path, weights_only=True)  # only tensors and plain values inside

    class Payload:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "metabench-checkpoint/1", "x": Payload()}))
    with pytest.raises(ValueError, match="not a loadable metabench checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_evaluation_is_deterministic_and_traceable(tmp_path):
    path = train(
        "protonet",
        "MetaOmniglot-5w1s-v0",
        tmp_path,
        iterations=2,
        config={"width": 8, "train_way": 10},
        val_interval=2,
        val_episodes=5,
        progress=False,
    )
    learner, _ = load_checkpoint(path)
    first, records = evaluate(learner, "MetaOmniglot-5w1s-v0", n_episodes=60, progress=False)
    again, records_again = evaluate(load_checkpoint(path)[0], "MetaOmniglot-5w1s-v0", n_episodes=60, progress=False)
    assert records == records_again and first["results"] == again["results"]
    assert len(records) == 60 and first["transductive"] is False
    protocol = evaluation.test_protocol("MetaOmniglot-5w1s-v0", n_episodes=60)
    assert first["protocol"] == protocol
    assert protocol["split"] == "test" and protocol["manifest_sha256"].startswith("3d9746431741")
    accuracy = torch.tensor([record["accuracy"] for record in records], dtype=torch.float64)
    assert first["results"]["accuracy_mean"] == pytest.approx(float(accuracy.mean()))


def test_cli_train_then_evaluate_and_its_clear_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "protonet",
                "--env",
                "MetaOmniglot-5w1s-v0",
                "--iterations",
                "2",
                "--val-interval",
                "2",
                "--val-episodes",
                "5",
                "--out",
                str(out),
                "--config",
                "width=8",
                "train_way=10",
            ]
        )
        == 0
    )
    checkpoint = str(out / "checkpoint.pt")
    assert (
        main(
            [
                "evaluate",
                "--agent",
                "protonet",
                "--checkpoint",
                checkpoint,
                "--env",
                "MetaOmniglot-5w1s-v0",
                "--episodes",
                "50",
            ]
        )
        == 0
    )
    summary = json.loads((out / "evaluation-MetaOmniglot-5w1s-v0" / "summary.json").read_text())
    assert summary["training"]["iterations"] == 2 and summary["command"].startswith("metabench evaluate")
    assert "not a test score" in summary["note"]
    capsys.readouterr()
    for argv, message in [
        (
            ["evaluate", "--agent", "telepathy", "--checkpoint", checkpoint, "--env", "MetaOmniglot-5w1s-v0"],
            "unknown learner 'telepathy'",
        ),
        (
            [
                "evaluate",
                "--agent",
                "protonet",
                "--checkpoint",
                str(tmp_path / "nope.pt"),
                "--env",
                "MetaOmniglot-5w1s-v0",
            ],
            "no checkpoint",
        ),
        (
            ["evaluate", "--agent", "protonet", "--checkpoint", checkpoint, "--env", "MetaOmniglot-5w5s-v0"],
            "was trained on MetaOmniglot-5w1s-v0",  # ProtoNets move to another way (20w1s), not another shot
        ),
        (
            ["evaluate", "--agent", "maml", "--checkpoint", checkpoint, "--env", "MetaOmniglot-5w1s-v0"],
            "is a protonet checkpoint",
        ),
        (["train", "maml", "--env", "MetaOmniglot-5w1z", "--iterations", "1"], "unknown env id 'MetaOmniglot-5w1z'"),
        (["train", "maml", "--env", "MetaOmniglot-5w1s-v0", "--config", "inner_lr"], "key=value"),
        (["train", "maml", "--env", "MetaOmniglot-5w1s-v0", "--config", "warp=9"], "unknown maml hyperparameters"),
    ]:
        assert main(argv) == 1
        assert message in capsys.readouterr().err


TINY_PROTONET = {"width": 8, "train_way": 10}
LAKE = {"scheme": "lake"}


def test_env_kwargs_are_stored_rebuilt_recorded_and_pinned_on_resume(tmp_path):
    """A run on env arguments beyond the id's (here the lake split) keeps them everywhere it goes."""
    env_id = "MetaOmniglot-5w1s-v1"

    def run(iterations: int, env_kwargs: dict | None):
        return train(
            "protonet",
            env_id,
            tmp_path,
            iterations=iterations,
            config=TINY_PROTONET,
            val_interval=2,
            val_episodes=5,
            progress=False,
            env_kwargs=env_kwargs,
        )

    path = run(2, LAKE)
    state = torch.load(path, weights_only=True)
    assert state["env_kwargs"] == LAKE
    learner, checkpoint = load_checkpoint(path)  # rebuilt with them
    assert learner.task["scheme"] == "lake" and learner.task["env_kwargs"] == LAKE
    assert learner.task["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["lake"]["val"]
    # validation during training ran on the lake val split
    val, _ = evaluate(
        learner, env_id, split="val", n_episodes=5, seed=VAL_SEED, progress=False, env_kwargs=checkpoint["env_kwargs"]
    )
    assert checkpoint["history"][-1]["val_accuracy"] == val["results"]["accuracy_mean"]
    assert val["protocol"]["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["lake"]["val"]

    summary, _ = evaluate(learner, env_id, n_episodes=5, progress=False, env_kwargs=LAKE)
    assert summary["protocol"]["env_kwargs"] == LAKE  # such a score never passes for the registered protocol's
    assert summary["protocol"]["scheme"] == "lake"
    assert summary["protocol"]["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["lake"]["test"]
    plain, _ = evaluate(learner, env_id, n_episodes=5, progress=False)
    assert "env_kwargs" not in plain["protocol"] and plain["protocol"]["scheme"] == "vinyals"
    assert plain["protocol"] == evaluation.test_protocol(env_id, n_episodes=5)

    for other in (None, {"scheme": "vinyals"}, {**LAKE, "task_sampling": "within-alphabet"}):
        with pytest.raises(ValueError, match="was trained with env arguments"):
            run(4, other)
    assert load_checkpoint(run(3, dict(LAKE)))[1]["iteration"] == 3  # the same arguments resume


def test_env_kwargs_that_are_the_harnesss_own_are_refused(tmp_path):
    assert evaluation.check_env_kwargs(None) == {}
    for reserved in ({"split": "test"}, {"device": "cpu", "scheme": "lake"}):
        with pytest.raises(ValueError, match="set by the harness"):
            evaluation.check_env_kwargs(reserved)
        with pytest.raises(ValueError, match="set by the harness"):
            build_learner("protonet", "MetaOmniglot-5w1s-v1", TINY_PROTONET, env_kwargs=reserved)
        with pytest.raises(ValueError, match="set by the harness"):
            train("protonet", "MetaOmniglot-5w1s-v1", tmp_path, iterations=1, env_kwargs=reserved, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cli_train_and_evaluate_with_env_kwargs(tmp_path, capsys):
    out = tmp_path / "run"
    env_id = "MetaOmniglot-5w1s-v1"
    tiny = ["--iterations", "2", "--val-interval", "2", "--val-episodes", "2", "--config", "width=8", "train_way=10"]
    train_argv = ["train", "protonet", "--env", env_id, *tiny, "--out", str(out)]
    assert main([*train_argv, "--env-kwargs", "scheme=lake"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["env_kwargs"] == LAKE and state["training"]["command"].endswith("--env-kwargs scheme=lake")

    evaluate_argv = ["evaluate", "--agent", "protonet", "--checkpoint", str(out / "checkpoint.pt"), "--env", env_id]
    assert main([*evaluate_argv, "--episodes", "5"]) == 0  # the checkpoint's env arguments by default
    summary = json.loads((out / f"evaluation-{env_id}" / "summary.json").read_text())
    assert summary["protocol"]["env_kwargs"] == LAKE and summary["protocol"]["scheme"] == "lake"
    assert summary["protocol"]["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["lake"]["test"]
    assert main([*evaluate_argv, "--episodes", "5", "--env-kwargs", "scheme=vinyals"]) == 0  # overridden
    summary = json.loads((out / f"evaluation-{env_id}" / "summary.json").read_text())
    assert summary["protocol"]["env_kwargs"] == {"scheme": "vinyals"}
    assert summary["protocol"]["manifest_sha256"] == OMNIGLOT_V1_MANIFESTS["vinyals"]["test"]

    capsys.readouterr()
    assert main([*train_argv, "--env-kwargs", "scheme=vinyals"]) == 1  # resuming on other arguments
    assert "was trained with env arguments" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["train", "protonet", "--env", env_id, *tiny, "--out", str(other), "--env-kwargs", "split=test"]) == 1
    assert "set by the harness" in capsys.readouterr().err and not (other / "checkpoint.pt").exists()


TINY_ARGV = ["--val-episodes", "2", "--config", "width=8", "train_way=10"]


def test_ctrl_c_in_train_saves_the_checkpoint_and_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    learner_class = load_learner_class("protonet")
    original = learner_class.train_step

    def step_then_ctrl_c(self, episodes):
        metrics = original(self, episodes)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; train's handler finishes the step
        return metrics

    monkeypatch.setattr(learner_class, "train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    argv = ["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--iterations", "5", "--out", str(out), *TINY_ARGV]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("metabench")] == [
        f"metabench: interrupted at iteration 1; checkpoint saved to {out / 'checkpoint.pt'}; "
        "re-run the same command to resume"
    ]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 1
    with pytest.raises(TrainingInterrupted) as interrupted:  # the library raises a KeyboardInterrupt
        train("protonet", "MetaOmniglot-5w1s-v1", out, iterations=5, val_episodes=2, progress=False)
    assert isinstance(interrupted.value, KeyboardInterrupt) and interrupted.value.iteration == 2
    monkeypatch.setattr(learner_class, "train_step", original)
    assert main([*argv, "--time-budget", "60"]) == 0  # resumes where it stopped


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (["inner_lr=fast"], "maml hyperparameter inner_lr must be of type float, got 'fast' (str)"),
        (["meta_batch=2.5"], "maml hyperparameter meta_batch must be of type int, got 2.5 (float)"),
        (["meta_batch=true"], "maml hyperparameter meta_batch must be of type int, got True (bool)"),
        (["first_order=1"], "maml hyperparameter first_order must be of type bool, got 1 (int)"),
        (
            ["downsample=3"],
            "maml hyperparameter downsample must be of type str, got 3 (int) "
            """(quote text that reads as JSON: downsample='"3"')""",
        ),
    ],
)
def test_config_values_of_the_wrong_type_are_refused_naming_field_and_type(config, message, tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--iterations", "1", "--val-episodes", "2", "--config", "width=8", "meta_batch=1"]  # if ever accepted
    assert main(["train", "maml", "--env", "MetaOmniglot-5w1s-v1", "--out", str(out), *tiny, *config]) == 1
    assert capsys.readouterr().err == f"metabench: {message}\n"
    assert not out.exists()


def test_config_types_accept_what_they_should():
    assert (
        build_learner("maml", "MetaOmniglot-5w1s-v1", {"inner_lr": 1, "width": 8}).config.inner_lr == 1
    )  # int as float
    learner = build_learner("protonet", "MetaOmniglot-5w1s-v1", {"architecture": None, "width": 8, "train_way": 10})
    assert learner.config.architecture is None  # str | None
    with pytest.raises(ValueError, match=r"architecture must be of type str \| None, got 5 \(int\)"):
        build_learner("protonet", "MetaOmniglot-5w1s-v1", {"architecture": 5})


def test_resume_refuses_other_settings_and_unknown_keys(tmp_path, capsys):
    def run(iterations, **kwargs):
        return train(
            "protonet",
            "MetaOmniglot-5w1s-v1",
            tmp_path,
            iterations=iterations,
            val_episodes=2,
            progress=False,
            **kwargs,
        )

    run(1, config=TINY_PROTONET, seed=3)
    for kwargs, message in [
        ({"config": {"width": 16, "train_way": 10}}, r"with other settings: width=16 \(checkpoint: 8\)"),
        ({"config": {"lr": 0.5}, "seed": 0}, r"lr=0.5 \(checkpoint: 0.001\), seed=0 \(checkpoint: 3\)"),
        ({"config": {"lr": 0.5, "bogus_key": 1}}, r"unknown protonet hyperparameters: \['bogus_key'\]"),
        ({"config": {"lr": "fast"}}, "lr must be of type float"),
    ]:
        with pytest.raises(ValueError, match=message):
            run(2, **kwargs)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 1
    capsys.readouterr()
    argv = ["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--out", str(tmp_path), "--iterations", "2"]
    assert main([*argv, "--config", "lr=0.5", "bogus_key=1"]) == 1
    assert "unknown protonet hyperparameters: ['bogus_key']" in capsys.readouterr().err
    assert main([*argv, "--config", "lr=0.5"]) == 1
    assert capsys.readouterr().err.startswith(f"metabench: cannot resume the run in {tmp_path} with other settings")
    # the same settings, a part of them, or none resume the run with the checkpoint's
    run(2, config=TINY_PROTONET, seed=3)
    run(3, config={"width": 8})
    path = run(4)
    state = torch.load(path, weights_only=True)
    assert (state["iteration"], state["seed"], state["config"]["width"]) == (4, 3, 8)


def test_with_a_time_budget_the_bar_counts_seconds_and_a_resume_says_where_it_starts(tmp_path, capsys):
    assert progress_bar(60000, 0, None, "x", disable=True).total == 60000
    bar = progress_bar(60000, 123, 900.0, "x", disable=True)
    assert bar.total == 900.0 and bar.n == 0

    argv = ["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--out", str(tmp_path), *TINY_ARGV]
    assert main([*argv, "--time-budget", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "0.5/0.5 s of training" in captured.err and "/60000 [" not in captured.err  # not an iteration bar
    assert "resuming" not in captured.out
    done = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"]
    assert main([*argv, "--time-budget", "0.3"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from iteration {done} (of 60000)" in out and "up to 0.3 s more" in out
    assert main([*argv, "--iterations", "2", "--seed", "0"]) == 0  # the same seed, given explicitly
    assert "nothing left to train" in capsys.readouterr().out


def test_cuda_without_cuda_is_refused_by_the_harness(tmp_path, monkeypatch):
    path = train(
        "protonet", "MetaOmniglot-5w1s-v1", tmp_path, iterations=1, config=TINY_PROTONET, val_episodes=2, progress=False
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    for call in (
        lambda: train("protonet", "MetaOmniglot-5w1s-v1", tmp_path / "new", iterations=1, device="cuda"),
        lambda: load_checkpoint(path, "cuda"),
        lambda: build_learner("protonet", "MetaOmniglot-5w1s-v1", TINY_PROTONET, device="cuda"),
        lambda: evaluate(load_checkpoint(path)[0], "MetaOmniglot-5w1s-v1", n_episodes=2, device="cuda"),
    ):
        with pytest.raises(ValueError, match="CUDA is not available in this torch build"):
            call()
    assert not (tmp_path / "new").exists()
