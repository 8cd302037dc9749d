"""The metabench command line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metabench
from metabench import cli, leaderboard
from metabench.cli import main


def test_envs_lists_every_registered_env_with_its_protocol(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in metabench.ENV_IDS:
        assert env_id in out
    assert "20-way 1-shot, 15 queries/class" in out
    assert "vinyals" in out and "lake" in out


def test_envs_json_round_trips_the_specs(capsys):
    assert main(["envs", "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert [spec["id"] for spec in specs] == metabench.ENV_IDS


def test_data_where_names_both_folders(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "where"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cache") in out and "raw data folder" in out


def test_data_prepare_reports_missing_data_clearly(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("METABENCH_CACHE", str(tmp_path / "cache"))
    assert main(["data", "prepare", "--root", str(tmp_path / "empty")]) == 1
    assert "METABENCH_DATA" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "prepare", "--help"]])
def test_help_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: metabench" in capsys.readouterr().out


def test_help_imports_no_torch_before_the_command_runs():
    """Every --help is answered from the parser alone: registering the envs and building the parser (leaderboard
    commands included) import no torch, data or env module, which take seconds on a loaded machine."""
    script = (
        "import sys\n"
        "from metabench.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['submit', '--help'], ['leaderboard', 'check', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0\n"
        "heavy = sorted(name for name in ('torch', 'metabench.envs.omniglot', 'metabench.data') "
        "if name in sys.modules)\n"
        "print('imported:', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stderr.splitlines()[-1] == "imported: []"


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"metabench {metabench.__version__}"


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`metabench envs | head -3`: stdout closes before the command writes; no BrokenPipeError traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "metabench.cli", "envs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # long before the command has imported torch and printed anything
    _, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 141


def test_ctrl_c_outside_training_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_envs", interrupted)
    assert main(["envs"]) == 130
    assert capsys.readouterr().err == "metabench: interrupted\n"


def every_command(parser, prefix=()):
    """The argv prefix of every (sub)command of ``parser``."""
    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_command(sub, (*prefix, name))


def test_help_texts_print_percent_signs_once(capsys):
    commands = list(every_command(cli.build_parser()))
    assert ["evaluate"] in commands and ["leaderboard", "verify"] in commands and ["search-plot"] in commands
    for argv in commands:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert "%%" not in out, argv
    main_help = subprocess.run(  # argparse wraps to the terminal width; 95% must not be split from CI here
        [sys.executable, "-m", "metabench.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    ).stdout
    assert "(mean and 95% CI over seeds" in main_help
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "95% CIs" in " ".join(capsys.readouterr().out.split())


def test_cuda_without_cuda_is_refused_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    for argv in (
        ["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--device", "cuda", "--out", str(tmp_path / "run")],
        ["evaluate", "--agent", "protonet", "--checkpoint", str(tmp_path / "c.pt"), "--env", "MetaOmniglot-5w1s-v1"]
        + ["--device", "cuda"],
        ["search", "random", "--env", "MetaSinusoid-5shot-v0", "--device", "cuda:0", "--out", str(tmp_path / "s")],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("metabench: device 'cuda") and "CUDA is not available in this torch build" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists()
    assert main(["train", "protonet", "--env", "MetaOmniglot-5w1s-v1", "--device", "gpu"]) == 1
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_leaderboard_outside_a_checkout_needs_a_root(capsys, monkeypatch, tmp_path):
    """Installed (not in a checkout) and without $METABENCH_LEADERBOARD, nothing creates ./leaderboard."""
    monkeypatch.delenv(leaderboard.ROOT_ENV_VAR, raising=False)
    monkeypatch.setattr(metabench, "__file__", str(tmp_path / "site-packages" / "metabench" / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    for argv in (["leaderboard"], ["leaderboard", "check"], ["leaderboard", "verify", "x/y"], ["submit", "evaluation"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("metabench: no leaderboard folder") and "--root" in err and "METABENCH_LEADERBOARD" in err
    assert not (tmp_path / "leaderboard").exists()
    # an explicit root is created (an empty leaderboard), and a ./leaderboard that exists is used
    assert main(["leaderboard", "--root", str(tmp_path / "board")]) == 0
    assert (tmp_path / "board" / "README.md").is_file()
    (tmp_path / "leaderboard").mkdir()
    assert leaderboard.default_root() == Path("leaderboard")
    monkeypatch.setenv(leaderboard.ROOT_ENV_VAR, str(tmp_path / "board"))
    assert leaderboard.default_root() == tmp_path / "board"


def write_search_run(folder: Path, method: str, env_id: str, best_rewards: list[float], **env_kwargs) -> None:
    folder.mkdir(parents=True)
    best = {"method": method, "env_id": env_id, "env_kwargs": {"split": "val", **env_kwargs}, "wall_seconds": 1.0}
    (folder / "best.json").write_text(json.dumps(best))
    rows = "".join(f"{i + 1},{reward},{reward}\n" for i, reward in enumerate(best_rewards))
    (folder / "trace.csv").write_text("evaluation,reward,best_reward\n" + rows)


def test_search_plot_refuses_runs_of_different_envs(capsys, tmp_path):
    write_search_run(tmp_path / "a" / "seed-0", "random", "MetaAugment-Omniglot-5w1s-v1", [-1.0, -0.9])
    write_search_run(tmp_path / "b" / "seed-0", "random", "MetaNAS-Omniglot-5w1s-v1", [-0.5, -0.4])
    write_search_run(tmp_path / "c" / "seed-0", "random", "MetaOptimizer-Sinusoid-v0", [1.0, 2.0], reward_mode="delta")
    write_search_run(tmp_path / "d" / "seed-0", "random", "MetaOptimizer-Sinusoid-v0", [-3.0, -2.0])
    for folders in (["a", "b"], ["c", "d"]):
        assert main(["search-plot", *(str(tmp_path / f) for f in folders), "--out", str(tmp_path / "p.png")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("metabench: the search runs are on 2 different envs") and err.count("\n") == 1
    assert not (tmp_path / "p.png").exists()
    assert main(["search-plot", str(tmp_path / "a"), "--out", str(tmp_path / "p.png")]) == 0
    assert capsys.readouterr().out.startswith("env: MetaAugment-Omniglot-5w1s-v1")


def test_search_plot_band_stops_at_the_largest_possible_reward(monkeypatch, tmp_path):
    from matplotlib.axes import Axes

    from metabench.search import load_runs, max_reward, plot_best_so_far

    assert max_reward("MetaAugment-Omniglot-5w1s-v1") == 0.0 and max_reward("MetaOmniglot-5w1s-v1", {}) == 0.0
    assert max_reward("MetaOptimizer-Sinusoid-v0", {"reward_mode": "delta"}) is None  # rewards sum to a decrease
    assert max_reward("someone-else/Env-v0") is None
    bands = []
    monkeypatch.setattr(Axes, "fill_between", lambda self, x, low, high, **kw: bands.append((low, high)))
    for seed, rewards in enumerate(([-0.30, -0.002], [-0.20, -0.001], [-0.01, -0.0001])):
        write_search_run(tmp_path / "runs" / f"seed-{seed}", "random", "MetaAugment-Omniglot-5w1s-v1", rewards)
    plot_best_so_far(load_runs([tmp_path / "runs"]), tmp_path / "p.png")
    ((low, high),) = bands
    assert high.max() == 0.0 and low[-1] < 0 and high[0] < 0  # mean + CI would pass 0 at evaluation 2


def test_paired_compares_two_evaluations_episode_by_episode_and_refuses_other_episodes(capsys, tmp_path):
    def write(name: str, sha: str, rewards: list[float]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps({"env_id": "E-v1", "protocol": {"episodes_sha256": sha}}))
        records = [{"episode": i, "reward": r, "accuracy": 0.5 + r} for i, r in enumerate(rewards)]
        (folder / "episodes.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
        return str(folder)

    agent, baseline = write("a", "x", [-0.1, -0.2, -0.3, -0.4]), write("b", "x", [-0.2, -0.2, -0.5, -0.5])
    assert main(["paired", agent, baseline, "--json", str(tmp_path / "paired.json")]) == 0
    result = json.loads((tmp_path / "paired.json").read_text())
    assert result["episodes"] == 4 and result["reward_difference_mean"] == pytest.approx(0.1)
    assert result["accuracy_difference_mean"] == pytest.approx(0.1) and result["better_fraction"] == 0.75
    differences = [0.1, 0.0, 0.2, 0.1]
    assert result["reward_difference_ci95"] == pytest.approx(1.96 * np.std(differences, ddof=1) / 2)
    out = capsys.readouterr().out
    assert "same 4 episodes of E-v1" in out and "reward +0.1000" in out and "+10.00" in out and "75 %" in out
    assert main(["paired", agent, write("c", "y", [0.0] * 4)]) == 1
    assert "different episodes" in capsys.readouterr().err
