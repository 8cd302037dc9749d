"""The worked examples of examples/ run end to end with their small defaults, and the learner contract they rely on.

Every example writes into a temporary folder and submits to a temporary leaderboard root, never to the
repository's ``leaderboard/`` or ``runs/``.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType

import pytest
import torch

from metabench import leaderboard, learners
from metabench.checkpoints import load_checkpoint
from metabench.cli import main as metabench_command
from metabench.learners import (
    Learner,
    available,
    check_learner_class,
    learner_reference,
    load_learner_class,
    meta_batch_size,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = "MetaOmniglot-5w1s-v1"


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import examples.X`` as from the repository root (``python -m examples.X``), however pytest was started."""
    monkeypatch.syspath_prepend(str(ROOT))


def example(name: str) -> ModuleType:
    return importlib.import_module(f"examples.{name}")


# --------------------------------------------------------------------------------------------- the examples


def test_agent_from_scratch_beats_chance(omniglot_dir: Path) -> None:
    result = example("agent_from_scratch").main([])
    assert result["accuracy"] > 0.3  # 5-way: chance is 0.2; nearest class mean on pixels gets about 0.4
    assert -math.log(5) < result["reward"] < 0  # better than uniform logits (reward -ln 5)


def test_own_learner_by_import_path_is_trained_evaluated_and_submitted(omniglot_dir: Path, tmp_path: Path) -> None:
    """The reported failure: a learner found by its import path is rebuilt from its checkpoint by
    ``load_checkpoint`` and by ``metabench evaluate --agent module:Class``, then submitted."""
    module = example("own_learner")
    assert learner_reference(module.PixelProto) == "examples.own_learner:PixelProto"
    board = tmp_path / "board"
    result = module.main(["--out", str(tmp_path / "work"), "--root", str(board)])

    state = torch.load(result["checkpoint"], weights_only=True)
    assert state["agent"] == "pixel-proto" and state["training"]["meta_batch"] == module.PixelProto.Config.meta_batch
    assert result["val"]["results"]["accuracy_mean"] > 0.3
    summary = json.loads((result["evaluation"] / "summary.json").read_text())
    assert summary["agent"] == "pixel-proto" and summary["results"]["episodes"] == 1000
    assert math.isfinite(summary["results"]["reward_mean"]) and summary["results"]["accuracy_mean"] > 0.3
    assert summary["command"].startswith("metabench evaluate --agent examples.own_learner:PixelProto")

    (entry,) = leaderboard.load_entries(board, ENV)
    assert entry.name == result["entry"].name and entry.record.agent == "pixel-proto" and not entry.problems
    assert entry.record.metadata.method.startswith("PixelProto") and not entry.verified
    assert entry.name in (board / "README.md").read_text()
    assert not (ROOT / "leaderboard" / ENV / entry.name).exists()


def test_own_learner_by_the_entry_point_of_a_users_package(
    omniglot_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real package declaring a ``metabench.learners`` entry point, built and installed by pip into a folder
    of its own (the environment is untouched): the learner is found by name, and its entry is verified."""
    pytest.importorskip("setuptools", reason="pip builds the package with the installed setuptools")
    package = tmp_path / "pixel-proto-package"
    package.mkdir()
    shutil.copy(ROOT / "examples" / "own_learner.py", package / "pixel_proto_demo.py")
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "pixel-proto-demo"
            version = "0.1.0"

            [project.entry-points."metabench.learners"]
            pixel-proto = "pixel_proto_demo:PixelProto"

            [tool.setuptools]
            py-modules = ["pixel_proto_demo"]
            """
        )
    )
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--disable-pip-version-check", "--target", str(site), str(package)],
        check=True,
        env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
    )
    monkeypatch.syspath_prepend(str(site))
    assert available()["pixel-proto"] == "pixel_proto_demo:PixelProto"
    installed = load_learner_class("pixel-proto")
    assert installed.__module__ == "pixel_proto_demo" and learner_reference(installed) == "pixel-proto"

    board = tmp_path / "board"
    result = example("own_learner").main(
        ["--agent", "pixel-proto", "--out", str(tmp_path / "work"), "--root", str(board), "--verify"]
    )
    learner, state = load_checkpoint(result["checkpoint"])
    assert type(learner) is installed and state["agent"] == "pixel-proto"
    assert result["verification"].passed, result["verification"].message
    (entry,) = leaderboard.load_entries(board, ENV)
    assert entry.verified and entry.record.agent == "pixel-proto"


def test_sb3_agent_learns_in_the_plain_gym_loop() -> None:
    result = example("sb3_optimizer_agent").main(["--timesteps", "256", "--episodes", "5"])
    assert result["timesteps"] >= 256
    for key in ("ppo_reward", "sgd_reward"):
        assert math.isfinite(result[key]) and result[key] <= 0


def test_cmaes_search_through_the_harness_and_the_gym_loop(omniglot_dir: Path, tmp_path: Path) -> None:
    module = example("cmaes_search")
    result = module.main(["--out", str(tmp_path), "--evaluations", "12", "--generations", "2", "--popsize", "6"])
    with open(tmp_path / "trace.csv", newline="") as handle:
        trace = list(csv.DictReader(handle))
    assert [int(row["evaluation"]) for row in trace] == list(range(1, 13))
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["evaluations"] == 12 and best["method"] == "examples.cmaes_search:DiscreteCMAES"
    assert best["config"]["popsize"] == 6 and best["env_kwargs"]["tasks_per_step"] == 2
    assert max(float(row["reward"]) for row in trace) == result["search"].best_reward < 0

    agent, state = load_checkpoint(tmp_path / "checkpoint.pt")  # the answer as an open-loop agent
    assert state["agent"] == "open-loop" and agent.config.candidate == result["search"].answer
    nvec = [12, 10, 11] * 5
    assert all(0 <= value < n and value == int(value) for value, n in zip(agent.config.candidate, nvec, strict=True))

    by_hand = result["gym_loop"]
    assert len(by_hand["rewards"]) == 12 and all(math.isfinite(r) and r < 0 for r in by_hand["rewards"])
    assert by_hand["best_reward"] == max(by_hand["rewards"])
    assert all(0 <= value < n for value, n in zip(by_hand["mean_policy"], nvec, strict=True))


def test_the_reported_commands_work_for_a_module_in_the_current_folder(
    omniglot_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """``metabench train mymodule:PixelProto`` and ``metabench evaluate --agent mymodule:PixelProto`` where
    ``mymodule.py`` lies in the current folder; a learner whose Config has no ``meta_batch`` trains one task
    per step."""
    source = (ROOT / "examples" / "own_learner.py").read_text()
    extra = textwrap.dedent(
        """

        class NoBatch(PixelProto):
            name = "pixel-proto-no-batch"

            @dataclasses.dataclass
            class Config:
                dim: int = 16
                lr: float = 1e-3
        """
    )
    main_guard = '\nif __name__ == "__main__":'
    (tmp_path / "mymodule.py").write_text(source.replace(main_guard, extra + main_guard))
    monkeypatch.chdir(tmp_path)  # not on sys.path: the harness looks for mymodule in the current folder too
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", ".", str(tmp_path))])
    request.addfinalizer(lambda: sys.modules.pop("mymodule", None))
    for agent, meta_batch in (("mymodule:PixelProto", 4), ("mymodule:NoBatch", 1)):
        out = tmp_path / agent.replace(":", "-")
        train = ["train", agent, "--env", ENV, "--iterations", "2", "--val-interval", "2", "--val-episodes", "5"]
        assert metabench_command([*train, "--out", str(out), "--config", "dim=8"]) == 0, capsys.readouterr().err
        checkpoint = str(out / "checkpoint.pt")
        evaluate = ["evaluate", "--agent", agent, "--checkpoint", checkpoint, "--env", ENV, "--episodes", "25"]
        assert metabench_command(evaluate) == 0, capsys.readouterr().err
        summary = json.loads((out / f"evaluation-{ENV}" / "summary.json").read_text())
        assert summary["training"]["meta_batch"] == meta_batch and summary["training"]["iterations"] == 2
        assert math.isfinite(summary["results"]["reward_mean"])


# --------------------------------------------------------------------------------------------- the learner contract


def test_the_learner_contract_is_checked_with_every_problem_listed() -> None:
    class Broken(Learner):
        name = ""
        transductive = "no"

        @dataclasses.dataclass
        class Config:
            width: int

    with pytest.raises(ValueError) as error:
        check_learner_class(Broken)
    message = str(error.value)
    for problem in ("`name` must be a non-empty str", "`transductive` must be a bool", "missing: ['width']"):
        assert problem in message
    assert "implement state_dict()" in message and "predict() (few-shot learners) or act()" in message

    class NotADataclass(example("own_learner").PixelProto):
        class Config:
            meta_batch = 4

    with pytest.raises(ValueError, match="`Config` must be a class decorated with @dataclasses.dataclass"):
        check_learner_class(NotADataclass)

    class ZeroBatch(example("own_learner").PixelProto):
        @dataclasses.dataclass
        class Config:
            meta_batch: int = 0

    with pytest.raises(ValueError, match="meta_batch` must default to an int >= 1"):
        check_learner_class(ZeroBatch)
    for name in available():  # every registered learner meets the contract
        assert check_learner_class(load_learner_class(name))


def test_meta_batch_defaults_to_one() -> None:
    pixel_proto = example("own_learner").PixelProto
    task = {"env_id": ENV, "dataset": "omniglot", "n_way": 5}
    assert meta_batch_size(pixel_proto(pixel_proto.Config(), task)) == 4

    class Single(pixel_proto):
        @dataclasses.dataclass
        class Config:
            dim: int = 8
            lr: float = 1e-3

    assert meta_batch_size(Single(Single.Config(), task)) == 1
    with pytest.raises(ValueError, match="meta_batch must be an int >= 1"):
        meta_batch_size(pixel_proto(pixel_proto.Config(meta_batch=0), task))


def test_learner_references_resolve_and_unknown_names_say_what_to_give() -> None:
    pixel_proto = example("own_learner").PixelProto
    for learner_class in (pixel_proto, load_learner_class("protonet")):
        assert load_learner_class(learner_reference(learner_class)) is learner_class
    assert learner_reference(load_learner_class("protonet")) == "protonet"

    with pytest.raises(ValueError) as error:
        load_learner_class("pixel-proto")  # a class's `name` is not how the harness finds it
    message = str(error.value)
    assert "unknown learner 'pixel-proto'" in message and "protonet" in message and "module:" in message
    assert "entry-point group" in message
    with pytest.raises(ValueError, match="No module named 'no_such_module'.*PYTHONPATH"):
        load_learner_class("no_such_module:Learner")
    with pytest.raises(ValueError, match="is not a metabench.learners.Learner subclass"):
        load_learner_class("examples.own_learner:main")

    def local() -> type:
        class Local(pixel_proto):
            pass

        return Local

    with pytest.raises(ValueError, match="inside a function"):
        learner_reference(local())


def test_a_learner_registered_under_another_name_than_its_own_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = EntryPoint("pixel", "examples.own_learner:PixelProto", learners.ENTRY_POINT_GROUP)
    monkeypatch.setattr(learners, "entry_points", lambda group: [entry] if group == learners.ENTRY_POINT_GROUP else [])
    with pytest.raises(ValueError, match="registered as 'pixel' .* but is named 'pixel-proto'"):
        load_learner_class("pixel")


def test_a_built_wheel_installs_and_runs_outside_the_checkout(omniglot_dir: Path, tmp_path: Path) -> None:
    """The wheel pip builds from the sources: installed into a folder of its own and imported from elsewhere, it
    makes an env (even beside a folder named ``metabench``), finds the reference learners by name, ships py.typed
    and its protocol files, and installs no top-level ``baselines`` (a well-known RL package's import name)."""
    pytest.importorskip("setuptools", reason="pip builds the wheel with the installed setuptools")
    source = tmp_path / "source"
    for part in ("metabench", "baselines"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    quiet = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore"}
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(source)],
        check=True,
        env=quiet,
    )
    (wheel,) = tmp_path.glob("metabench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "metabench/py.typed" in names and "metabench/protocols/vinyals/test.txt" in names
    assert "metabench_baselines/protonet.py" in names and not any(name.startswith("baselines/") for name in names)
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, env=quiet
    )
    script = textwrap.dedent(
        """\
        import importlib.util, gymnasium as gym, metabench
        from metabench.learners import load_learner_class
        env = gym.make("MetaOmniglot-5w1s")
        observation, info = env.reset(seed=0)
        print(metabench.__file__, env.spec.id, load_learner_class("protonet").__module__,
              importlib.util.find_spec("baselines") is None)
        """
    )
    (tmp_path / "metabench").mkdir()  # a folder of that name beside the user's script: no package, no shadow
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site), "METABENCH_DATA": str(omniglot_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    location, env_id, module, no_baselines = run.stdout.split()
    assert Path(location).is_relative_to(site) and env_id == "MetaOmniglot-5w1s-v1"
    assert module == "metabench_baselines.protonet" and no_baselines == "True"
