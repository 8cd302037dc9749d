"""Faults and bad inputs: each gets one line ``metabench: ...`` (exit 1) naming the bad value, or is handled."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import metabench  # noqa: F401  (registers the envs)
from metabench import checkpoints, data, training
from metabench.cli import main

TINY = ["--val-episodes", "2", "--config", "width=8", "train_way=10"]
TINY_CONFIG = {"width": 8, "train_way": 10}
TRAIN = ["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--iterations", "2", *TINY]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command line; assert exit status 1 and a single ``metabench: ...`` line on stderr; return it."""
    assert main(argv) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metabench: ")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--val-interval", "0"], "val_interval must be a positive integer, got 0"),
        (["--time-budget", "-1"], "time_budget must be a positive, finite number of seconds, got -1.0"),
        (["--time-budget", "-5"], "time_budget must be a positive, finite number of seconds, got -5.0"),
        (["--time-budget", "0"], "time_budget must be a positive, finite number of seconds, got 0.0"),
        (["--iterations", "-5"], "iterations must be a positive integer, got -5"),
        (["--iterations", "-3"], "iterations must be a positive integer, got -3"),
        (["--env-kwargs", "bogus=1"], "unknown env argument 'bogus' for MetaOmniglot-5w1s-v1; it takes k_shot"),
        (["--env-kwargs", "n_quer=5"], "unknown env argument 'n_quer' (did you mean 'n_query'?)"),
        (["--config", "lr=Infinity"], "protonet hyperparameter lr must be a finite number, got inf"),
        (["--config", "lr=NaN"], "protonet hyperparameter lr must be a finite number, got nan"),
        (["--config", "lr=-0.1"], "protonet hyperparameter lr must be >= 0 (default 0.001), got -0.1"),
        (["--config", "width=1000000000000"], "out of memory"),
        (["--device", "mps"], "device 'mps' is not supported: use 'cpu' or 'cuda'"),
        (["--device", "meta"], "device 'meta' is not supported: use 'cpu' or 'cuda'"),
    ],
)
def test_bad_training_settings_are_refused_in_one_line(extra, message, capsys, tmp_path):
    out = tmp_path / "run"
    line = one_line_error(capsys, [*TRAIN, "--out", str(out), *extra])
    assert message in line
    assert not (out / "checkpoint.pt").exists() and not (out / "log.csv").exists()


def test_bad_folders_are_refused_in_one_line(capsys, tmp_path, a_file, monkeypatch):
    line = one_line_error(capsys, [*TRAIN, "--out", str(a_file)])
    assert (
        line
        == f"metabench: {a_file}: File exists; a file is in the way: expected a folder, or a path that does "
        + ("not exist yet")
    )
    too_long = tmp_path / ("x" * 300)
    line = one_line_error(capsys, [*TRAIN, "--out", str(too_long)])
    assert line.endswith(
        "File name too long; a name in the path is too long (most file systems allow 255 bytes per name)"
    )
    line = one_line_error(capsys, ["data", "verify", "--root", str(a_file)])
    assert line == f"metabench: --root {a_file} is a file; expected the folder holding the Omniglot zips or npz files"

    read_only = tmp_path / "read-only"
    mkdir = Path.mkdir

    def refused(self: Path, *args, **kwargs) -> None:  # what a folder without write permission does (tests run as root)
        if self == read_only / "run":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refused)
    line = one_line_error(capsys, [*TRAIN, "--out", str(read_only / "run")])
    assert line == (
        f"metabench: {read_only / 'run'}: Permission denied; permission denied: choose a folder you can write to, or "
        "fix its permissions"
    )


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_cache_folder_that_cannot_be_made_is_one_line(where, capsys, monkeypatch, a_file):
    cache = a_file if where == "a file" else a_file / "cache"
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(cache))
    line = one_line_error(capsys, ["data", "where"])
    reason = "File exists" if where == "a file" else "Not a directory"
    assert line == (
        f"metabench: ${data.CACHE_ENV_VAR} ({cache}) cannot be created ({reason}); set ${data.CACHE_ENV_VAR} to a "
        "writable folder"
    )


def test_ctrl_c_during_start_up_is_one_line(capsys, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "build_learner", interrupted)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "metabench: interrupted\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "protonett", "--env", "MetaOmniglot-5w1s-v1"],
            "unknown learner 'protonett' (did you mean 'protonet'?)",
        ),
        (["train", "protonet", "--env", "MetaOmniglot-5w1-v1"], "unknown env id 'MetaOmniglot-5w1-v1' (did you mean"),
        (["search", "random", "--env", "MetaNas-Omniglot-5w1s-v1"], "(did you mean 'MetaNAS-Omniglot-5w1s-v1'?)"),
        (["evaluate", "--agent", "protonet", "--checkpoint", "x.pt", "--env", "Nope"], "`import metabench` registers"),
    ],
)
def test_unknown_names_say_what_was_meant(argv, message, capsys):
    assert message in one_line_error(capsys, argv)


def test_an_unversioned_id_means_its_latest_version_as_for_gym_make(capsys, tmp_path):
    assert main([*TRAIN[:3], "MetaOmniglot-5w1s", *TRAIN[4:], "--iterations", "1", "--out", str(tmp_path)]) == 0
    assert "MetaOmniglot-5w1s is MetaOmniglot-5w1s-v1 (its latest version)" in capsys.readouterr().err
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["env_id"] == gym.make("MetaOmniglot-5w1s").spec.id


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    training.train(
        "protonet",
        "MetaOmniglot-5w1s-v1",
        out,
        iterations=1,
        val_episodes=2,
        progress=False,
        config={"width": 8, "train_way": 10},
    )
    return out / "checkpoint.pt"


def broken_checkpoint(source: Path, folder: Path, change) -> Path:
    state = torch.load(source, weights_only=True)
    change(state)
    path = folder / "checkpoint.pt"
    torch.save(state, path)
    return path


def nan_weights(state: dict) -> None:
    state["learner"]["params"]["conv0.weight"].fill_(float("nan"))


def missing_tensor(state: dict) -> None:
    del state["learner"]["params"]["conv0.bias"]


def broadcastable_shape(state: dict) -> None:  # copy_ would broadcast (8,) into every bias
    state["learner"]["params"]["conv0.bias"] = torch.zeros(1)


def no_seed(state: dict) -> None:
    del state["seed"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (nan_weights, "learner['params']['conv0.weight'] holds NaN or inf; the checkpoint's weights are not usable"),
        (missing_tensor, "learner['params'] does not match the learner's state: missing ['conv0.bias'], unexpected []"),
        (
            broadcastable_shape,
            "learner['params']['conv0.bias'] has shape (1,), the learner built from the checkpoint's",
        ),
        (no_seed, "lacks the checkpoint field(s) seed: it is damaged or hand-made"),
    ],
)
def test_evaluation_refuses_a_checkpoint_that_does_not_fit(change, message, tiny_checkpoint, tmp_path, capsys):
    path = broken_checkpoint(tiny_checkpoint, tmp_path, change)
    argv = ["evaluate", "--agent", "protonet", "--checkpoint", str(path), "--env", "MetaOmniglot-5w1s-v1"]
    assert message in one_line_error(capsys, [*argv, "--episodes", "2"])
    assert not (tmp_path / "evaluation-MetaOmniglot-5w1s-v1").exists()


def test_a_second_train_on_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = training.lock_run_folder(out)  # what a running `metabench train` holds
    try:
        line = one_line_error(capsys, [*TRAIN, "--out", str(out)])
    finally:
        holder.close()
    assert line == (
        f"metabench: {out} is in use by another metabench train (pid {os.getpid()}): wait for it to end, or train in "
        "another folder"
    )
    assert not (out / "checkpoint.pt").exists()


def test_a_full_disk_keeps_checkpoint_and_log_consistent_and_leaves_no_temporary_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    (out).mkdir()
    (out / ".checkpoint.pt.999-1.tmp").write_bytes(b"left by a run killed with kill -9")
    saves = []
    fsync = os.fsync

    def full_at_the_second_checkpoint(fd: int) -> None:
        saves.append(fd)
        if len(saves) == 4:  # iteration 0 wrote checkpoint.pt, log.csv, curve.png; then checkpoint.pt of iteration 1
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(data.os, "fsync", full_at_the_second_checkpoint)
    argv = [*TRAIN, "--iterations", "4", "--val-interval", "1", "--out", str(out)]
    line = one_line_error(capsys, argv)
    assert line == (
        f"metabench: {out / 'checkpoint.pt'}: No space left on device; the disk is full: free some space and re-run "
        "the same command (a run resumes from its checkpoint)"
    )
    stored = torch.load(out / "checkpoint.pt", weights_only=True)
    log = (out / "log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in log] == [str(row["iteration"]) for row in stored["history"]]
    assert sorted(path.name for path in out.iterdir() if path.name.endswith(".tmp")) == []


@pytest.fixture
def quick_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validations that cost nothing (a fixed score, no plot): the tests below check when they happen."""
    results = {"accuracy_mean": 0.5, "accuracy_ci95": 0.0, "reward_mean": -1.0, "reward_ci95": 0.0}
    monkeypatch.setattr(training, "evaluate", lambda *args, **kwargs: ({"results": results}, []))
    monkeypatch.setattr(training, "plot_curve", lambda *args: None)
    monkeypatch.setattr(training, "MIN_VAL_INTERVAL", 1)  # the schedule of a long run, on a few iterations


def test_the_default_validation_interval_gives_a_curve_of_20_points_after_iteration_0(tmp_path, quick_validation):
    training.train("protonet", "MetaOmniglot-5w1s-v1", tmp_path, iterations=20, progress=False, config=TINY_CONFIG)
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == list(range(21))


def test_with_a_time_budget_the_curve_has_20_points_through_the_budget(tmp_path, quick_validation, monkeypatch):
    class Clock:  # every training step takes 1/64 s on this clock, however loaded the machine is
        now = 0.0
        process_time = staticmethod(time.process_time)

        @classmethod
        def perf_counter(cls) -> float:
            cls.now += 1 / 64
            return cls.now

    monkeypatch.setattr(training, "time", Clock)
    training.train(
        "protonet", "MetaOmniglot-5w1s-v1", tmp_path, iterations=60000, time_budget=1.0, progress=False,
        config=TINY_CONFIG,
    )  # fmt: skip
    history = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["history"]
    iterations = [row["iteration"] for row in history]
    assert len(iterations) == 21 and iterations[0] == 0 and iterations[-1] == 64  # the whole budget: 64 steps
    assert {later - earlier for earlier, later in zip(iterations, iterations[1:], strict=False)} <= {3, 4}


# --- the envs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sinusoid() -> gym.Env:
    return gym.make("MetaSinusoid-5shot-v0")


def score(env: gym.Env, action) -> float:
    env.reset(seed=3)
    return env.step(action)[1]


@pytest.mark.parametrize("dtype", [np.longdouble, np.dtype(">f4"), np.dtype("<f8"), np.float16])
def test_actions_of_any_real_numpy_dtype_are_scored_as_float32(dtype, sinusoid):
    action = np.linspace(-1, 1, 10).reshape(10, 1)
    assert score(sinusoid, action.astype(dtype)) == pytest.approx(score(sinusoid, action.astype(np.float32)), abs=1e-3)


def test_float8_tensors_are_scored_and_other_layouts_refused(sinusoid):
    action = torch.full((10, 1), 0.5)
    assert score(sinusoid, action.to(torch.float8_e4m3fn)) == pytest.approx(score(sinusoid, action))
    for tensor, kind in [
        (action.to_sparse(), "torch.sparse_coo"),
        (torch.quantize_per_tensor(action, 0.1, 0, torch.quint8), "quantized"),
        (torch.zeros(10, 1, device="meta"), "meta"),
    ]:
        sinusoid.reset(seed=0)
        with pytest.raises(
            ValueError, match=f"a dense tensor of real numbers of shape \\(10, 1\\), got a {kind} tensor"
        ):
            sinusoid.step(tensor)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: gym.make("MetaSinusoid-5shot-v0").reset(seed=True),
            "seed must be None or a non-negative integer, got True",
        ),
        (lambda: gym.make("MetaSinusoid-5shot-v0", n_query=5.5), "n_query must be a positive integer, got 5.5"),
        (lambda: gym.make("MetaOmniglot-5w1s-v1", n_query=5.5), "n_query must be a positive integer, got 5.5"),
        (lambda: gym.make("MetaOptimizer-Sinusoid-v0", n_query=0), "n_query must be a positive integer, got 0"),
        (lambda: gym.make("MetaSinusoid-5shot-v0", device="mps"), "device 'mps' is not supported"),
        (lambda: gym.make("MetaSinusoid-5shot-v0", device="meta"), "device 'meta' is not supported"),
        (lambda: gym.make_vec("MetaSinusoid-5shot-v0", num_envs=2.5), "num_envs must be a positive integer, got 2.5"),
    ],
)
def test_bad_env_arguments_are_value_errors_naming_them(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_metanas_refuses_a_cache_dir_that_is_a_file(a_file):
    with pytest.raises(ValueError, match="is a file; expected a folder for the result cache"):
        gym.make("MetaNAS-Omniglot-5w1s-v1", cache_dir=a_file)


def test_save_atomic_on_a_full_disk_raises_the_os_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    data.save_atomic({"old": torch.zeros(1)}, path)
    monkeypatch.setattr(data.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OSError, match="No space left"):
        data.save_atomic({"new": torch.ones(1)}, path)
    assert set(torch.load(path, weights_only=True)) == {"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


# --- clients: vector modes, pickling, off-the-shelf policies, Ray -----------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_same_seed_gives_the_same_tasks_in_every_vector_mode(mode):
    from gymnasium.vector import AutoresetMode

    env_id, key = "MetaSinusoid-5shot-v0", "support_y"
    native = gym.make_vec(env_id, num_envs=2)
    other = gym.make_vec(
        env_id, num_envs=2, vectorization_mode=mode, vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}
    )
    try:
        first, second = native.reset(seed=7)[0], other.reset(seed=7)[0]
        np.testing.assert_array_equal(first[key], second[key])
        np.testing.assert_array_equal(first[key][0], gym.make(env_id).reset(seed=7)[0][key])
        action = np.zeros(native.action_space.shape, np.float32)
        np.testing.assert_array_equal(native.step(action)[0][key], other.step(action)[0][key])
    finally:
        other.close()


def test_a_pickled_omniglot_env_carries_no_data_table_and_draws_the_same_tasks():
    env = gym.make("MetaOmniglot-5w1s-v1").unwrapped
    payload = pickle.dumps(env)
    assert len(payload) < 2_000_000  # the image table alone is about 100 MB
    copy = pickle.loads(payload)
    np.testing.assert_array_equal(env.reset(seed=4)[0]["query_images"], copy.reset(seed=4)[0]["query_images"])


def test_unit_actions_map_minus_one_to_one_onto_the_log10_learning_rates():
    unit = gym.make("MetaOptimizer-Sinusoid-v0", unit_actions=True)
    plain = gym.make("MetaOptimizer-Sinusoid-v0")
    assert (unit.action_space.low == -1).all() and (unit.action_space.high == 1).all()
    for action, log10_lr in [(0.0, -2.0), (-1.0, -5.0), (1.0, 1.0), (0.5, -0.5), (-7.0, -5.0)]:
        unit.reset(seed=0)
        plain.reset(seed=0)
        observation, reward, *_ = unit.step(np.full(3, action, np.float32))
        expected, expected_reward, *_ = plain.step(np.full(3, log10_lr, np.float32))
        np.testing.assert_array_equal(observation, expected)  # previous_log10_lr included: log10 units
        assert reward == expected_reward
    assert unit.unwrapped.protocol == plain.unwrapped.protocol


def test_the_cleanrl_port_runs_on_a_metaoptimizer_env(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from examples import cleanrl_ppo_optimizer

    argv = ["--total-timesteps", "128", "--num-envs", "2", "--num-steps", "64", "--num-minibatches", "4"]
    returns = cleanrl_ppo_optimizer.main([*argv, "--update-epochs", "1"])["returns_per_iteration"]
    assert len(returns) == 1 and len(returns[0]) >= 12  # 128 steps of 10-step (or shorter, diverged) episodes
    assert all(-125 <= value <= 0 for value in returns[0])


def test_more_ray_workers_than_the_cluster_has_cpus_are_refused_at_once():
    pytest.importorskip("ray")
    from metabench.cluster import Pool, connect

    ray = connect(cpus=2)
    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(ValueError, match=f"{cpus + 1} workers need {cpus + 1} CPUs, but the Ray cluster has {cpus}"):
        Pool(dict, workers=cpus + 1)


def test_the_batched_test_protocol_refuses_non_finite_predictions(tiny_checkpoint):
    from metabench.evaluation import evaluate

    learner, _ = checkpoints.load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        learner.params["conv0.weight"].fill_(float("nan"))  # as a learner that diverged in memory
    with pytest.raises(ValueError, match=r"protonet predicted NaN or inf \(episode 0 of the test protocol\)"):
        evaluate(learner, "MetaOmniglot-5w1s-v1", n_episodes=2, progress=False)


def test_one_seed_prints_no_nan_interval(capsys):
    from metabench.cli import _print_summary

    row = {"method": "random", "seeds": 1, "evaluations": 4, "best_reward_mean": -1.5, "best_reward_ci95": float("nan")}
    _print_summary([{**row, "wall_seconds_mean": 3.0}])
    assert (
        capsys.readouterr().out
        == "random: 1 seed x 4 evaluations, best reward -1.5000 (one seed: no CI), 3 s per seed\n"
    )


def test_a_local_ray_instance_starts_without_the_token_warning():
    pytest.importorskip("ray")
    script = "from metabench.cluster import connect; connect(cpus=1).shutdown()"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Token authentication" not in result.stderr
