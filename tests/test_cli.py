"""The metabench command line."""

from __future__ import annotations

import json

import pytest

import metabench
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
