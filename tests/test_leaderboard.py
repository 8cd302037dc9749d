"""The leaderboard: submission, validation (each refusal leaves the leaderboard byte-identical), views, verification.

One real but tiny protonet run (3 iterations, width 16) is evaluated once on the protocol's 1,000
test episodes through `metabench evaluate`; every forged submission is a copy of it with one thing
broken.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch

from metabench import leaderboard
from metabench.cli import main
from metabench.evaluation import record_test_run
from metabench.leaderboard import storage
from metabench.training import train

ENV = "MetaOmniglot-5w1s-v0"
CODE = "https://github.com/example/metabench"
PAPER = "https://arxiv.org/abs/1703.05175"
SVG = "{http://www.w3.org/2000/svg}"


def tree_state(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``, hidden ones included."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        state[relative] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def submit_argv(path: Path, root: Path, *extra: str, method: str = "ProtoNet tiny") -> list[str]:
    argv = ["submit", str(path), "--root", str(root), "--method", method, "--code", CODE, "--paper", PAPER]
    return [*argv, "--test-data-for-model-selection", "no", *extra]


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory, omniglot_dir: Path) -> Path:
    """What `metabench evaluate` wrote for a tiny real protonet run (the run folder also holds checkpoint.pt)."""
    run = tmp_path_factory.mktemp("run")
    checkpoint = train(
        "protonet", ENV, run, iterations=3, val_interval=3, val_episodes=25, progress=False, config={"width": 16}
    )
    out = run / f"evaluation-{ENV}"
    assert (
        main(["evaluate", "--agent", "protonet", "--checkpoint", str(checkpoint), "--env", ENV, "--out", str(out)]) == 0
    )
    return out


@pytest.fixture(scope="module")
def board(evaluation: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaderboard root holding the valid entry (submitted with metadata.json rather than flags)."""
    root = tmp_path_factory.mktemp("board") / "leaderboard"
    submission = tmp_path_factory.mktemp("submission") / "evaluation"
    shutil.copytree(evaluation, submission)
    metadata = {"method": "ProtoNet tiny", "code": CODE, "paper": PAPER, "test_data_for_model_selection": False}
    (submission / "metadata.json").write_text(json.dumps(metadata))
    checkpoint = evaluation.parent / "checkpoint.pt"
    leaderboard.submit(submission, root=root, checkpoint=checkpoint, submitted="2026-01-01T00:00:00Z")
    return root


@pytest.fixture
def board_copy(board: Path, tmp_path: Path) -> Path:
    root = tmp_path / "leaderboard"
    shutil.copytree(board, root)
    return root


@pytest.fixture
def submission(evaluation: Path, tmp_path: Path) -> Path:
    """A private copy of the evaluation folder, with its checkpoint beside it, to forge."""
    path = tmp_path / "submission"
    shutil.copytree(evaluation, path)
    shutil.copy(evaluation.parent / "checkpoint.pt", path / "checkpoint.pt")
    return path


def only_entry(root: Path) -> Path:
    (entry,) = (root / ENV).iterdir()
    return entry


def parse_charts(page: str) -> list[ElementTree.Element]:
    """The inline SVG charts of ``index.html``, each parsed as XML."""
    return [ElementTree.fromstring(chart) for chart in re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL)]


def chart_points(chart: ElementTree.Element) -> list[tuple[str, str, bool]]:
    """A chart's points as (entry, class, filled), each drawn as exactly one marker."""
    points = []
    for group in chart.iter(f"{SVG}g"):
        if group.get("data-entry"):
            (marker,) = group.iter(f"{SVG}use")
            points.append((group.get("data-entry"), group.get("class"), "fill: #ffffff" not in marker.get("style")))
    return points


# --------------------------------------------------------------------------------------------- a valid submission


def test_valid_submission_end_to_end(evaluation: Path, submission: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "fresh"
    assert main(submit_argv(submission, root, "--train-command", "metabench train protonet ...")) == 0
    out = capsys.readouterr().out
    assert "stored" in out and "ProtoNet tiny" in out and "unverified" in out

    entry = only_entry(root)
    for name in ("summary.json", "episodes.jsonl"):
        assert (entry / name).read_bytes() == (evaluation / name).read_bytes()
    assert (entry / "checkpoint.pt").read_bytes() == (evaluation.parent / "checkpoint.pt").read_bytes()
    record = json.loads((entry / "entry.json").read_text())
    summary = json.loads((evaluation / "summary.json").read_text())
    assert record["env_id"] == ENV and record["name"] == entry.name
    assert entry.name.startswith("protonet-tiny-")
    assert record["metadata"]["test_data_for_model_selection"] is False
    assert record["selection"] is None  # the checkpoint's folder keeps no record of test runs
    assert record["budget"]["iterations"] == 3 and record["budget"]["episodes_seen"] == 3
    assert record["seeds"] == {"training": 0, "test_episodes": 2026}
    assert record["command"] == summary["command"] and record["command"].startswith("metabench evaluate")
    assert record["transductive"] is False and record["metabench_version"] == summary["run"]["metabench_version"]

    readme = (root / "README.md").read_text()
    accuracy = f"{100 * summary['results']['accuracy_mean']:.2f} ± {100 * summary['results']['accuracy_ci95']:.2f} %"
    assert f"## {ENV}" in readme and accuracy in readme and "unverified" in readme and entry.name in readme
    assert "3 it × 1 = 3 episodes" in readme
    html_page = (root / "index.html").read_text()
    charts = parse_charts(html_page)
    assert [chart.get("class") for chart in charts] == ["chart chart-accuracy", "chart chart-compute"]
    for chart in charts:
        assert chart.get("data-env") == ENV
        assert "ProtoNet tiny" in [text.text for text in chart.iter(f"{SVG}text")]  # labelled with the method
        assert chart_points(chart) == [(entry.name, "point unverified", False)]  # one hollow point: unverified

    # `metabench leaderboard` prints the table and rebuilding is deterministic (byte-identical views).
    before = tree_state(root)
    assert main(["leaderboard", "--root", str(root), "--env", ENV]) == 0
    printed = capsys.readouterr().out
    assert entry.name in printed and accuracy in printed
    assert tree_state(root) == before
    elsewhere = tmp_path / "copy"
    shutil.copytree(root, elsewhere)
    (elsewhere / "README.md").unlink()
    (elsewhere / "index.html").unlink()
    leaderboard.rebuild(elsewhere)
    assert tree_state(elsewhere) == before


def test_root_comes_from_the_environment_variable(board_copy: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(leaderboard.ROOT_ENV_VAR, str(board_copy))
    assert leaderboard.default_root() == board_copy
    assert main(["leaderboard"]) == 0
    assert "ProtoNet tiny" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- refusals


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=1) + "\n")


def edit_lines(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


def set_record(index: int, **values: object) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        record = json.loads(lines[index]) | values
        lines[index] = json.dumps(record)  # json writes NaN for float("nan"), as evaluate would
        return lines

    return change


def results(**values: object) -> Callable[[dict], None]:
    return lambda summary: summary["results"].update(values)


def summary_field(**values: object) -> Callable[[dict], None]:
    return lambda summary: summary.update(values)


def protocol(**values: object) -> Callable[[dict], None]:
    return lambda summary: summary["protocol"].update(values)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def duplicate_line(lines: list[str]) -> list[str]:
    lines[10] = lines[9]
    return lines


def inflate(summary: dict) -> None:
    summary["results"]["accuracy_mean"] += 0.05


class Exploit:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def unsafe_checkpoint(path: Path, zipped: bool) -> None:
    """A raw pickle, or a torch zip checkpoint with the exploit among its values."""
    import pickle

    if zipped:
        buffer = io.BytesIO()
        torch.save({"format": "metabench-checkpoint/1", "learner": Exploit(path / "pwned")}, buffer)
        content = buffer.getvalue()
    else:
        content = pickle.dumps(Exploit(path / "pwned"))
    (path / "checkpoint.pt").write_bytes(content)
    edit_json(path / "summary.json", lambda s: s["checkpoint"].update(sha256=hashlib.sha256(content).hexdigest()))


# (id, what to break in the submission folder, extra/replaced argv, expected message)
SUMMARY = "summary.json"
EPISODES = "episodes.jsonl"
REFUSALS = [
    ("edited-summary", (SUMMARY, inflate), {}, "claims accuracy_mean"),
    ("edited-ci", (SUMMARY, results(accuracy_ci95=0.001)), {}, "claims accuracy_ci95"),
    ("missing-episode", (EPISODES, lambda lines: lines[:500] + lines[501:]), {}, "1 missing (e.g. [500])"),
    ("duplicated-episode", (EPISODES, duplicate_line), {}, "1 repeated (e.g. [9])"),
    (
        "extra-episode",
        (EPISODES, lambda lines: [*lines, lines[-1].replace('"episode": 999', '"episode": 1000')]),
        {},
        "outside the protocol",
    ),
    ("nan-reward", (EPISODES, set_record(3, reward=float("nan"))), {}, "finite number"),
    ("inf-accuracy", (EPISODES, set_record(3, accuracy=float("inf"))), {}, "finite number"),
    ("accuracy-above-one", (EPISODES, set_record(7, accuracy=1.5)), {}, "less than or equal to 1"),
    ("positive-reward", (EPISODES, set_record(7, reward=0.5)), {}, "less than or equal to 0"),
    ("accuracy-not-a-query-count", (EPISODES, set_record(7, accuracy=0.7777)), {}, "not a whole number"),
    ("string-typed-accuracy", (EPISODES, set_record(7, accuracy="0.72")), {}, "valid number"),
    ("nan-in-summary", (SUMMARY, results(reward_mean=float("nan"))), {}, "finite number"),
    ("extra-claim-in-summary", (SUMMARY, results(accuracy_top5=0.99)), {}, "Extra inputs are not permitted"),
    ("summary-missing-results", (SUMMARY, lambda s: s.pop("results")), {}, "results: Field required"),
    ("wrong-episode-hash", (SUMMARY, protocol(episodes_sha256="0" * 64)), {}, "episodes_sha256"),
    ("wrong-split-manifest", (SUMMARY, protocol(manifest_sha256="1" * 64)), {}, "manifest_sha256"),
    ("wrong-preprocessing", (SUMMARY, protocol(preprocessing="bilinear")), {}, "preprocessing"),
    ("unversioned-env-id", (SUMMARY, summary_field(env_id="MetaOmniglot-5w1s")), {}, "not a versioned id"),
    ("unregistered-env-id", (SUMMARY, summary_field(env_id="MetaOmniglot-7w1s-v0")), {}, "not registered"),
    ("path-as-env-id", (SUMMARY, summary_field(env_id="../../etc")), {}, "not a versioned id"),
    ("transductive-lie", (SUMMARY, summary_field(transductive=True)), {}, "transductive"),
    ("nan-in-protocol", (SUMMARY, protocol(extra=float("nan"))), {}, "NaN is not a finite number"),
    ("infinity-in-config", (SUMMARY, lambda s: s["training"]["config"].update(lr=float("inf"))), {}, "Infinity is"),
    ("deep-config", (SUMMARY, lambda s: s["training"]["config"].update(deep=nested(100))), {}, "more than 32 levels"),
    ("device-name-with-newline", (SUMMARY, lambda s: s["run"].update(device_name="cpu\n| x |")), {}, "control char"),
    ("budget-lie", (SUMMARY, lambda s: s["training"].update(iterations=60000)), {}, "training block"),
    (
        "invented-design",
        (
            SUMMARY,
            summary_field(
                design={
                    "agent": "open-loop",
                    "agent_config": {},
                    "answer": "conv3x3-64-maxpool",
                    "recipe": {},
                    "recipe_wall_seconds": 1.0,
                    "recipe_device_name": "cpu",
                }
            ),
        ),
        {},
        "summary.json's design",
    ),
    ("malicious-entry-name", None, {"--name": "../../etc"}, "path component"),
    ("absolute-entry-name", None, {"--name": "/etc/passwd"}, "absolute path"),
    ("hidden-entry-name", None, {"--name": ".hidden"}, "[A-Za-z0-9._-]"),
    ("malicious-method-name", None, {"--method": "../../etc"}, "looks like a path"),
    ("method-name-with-newline", None, {"--method": "ProtoNet\n| fake | row |"}, "control characters"),
    ("missing-code-link", None, {"--code": None}, "code: Field required"),
    ("missing-method", None, {"--method": None}, "method: Field required"),
    ("javascript-link", None, {"--code": "javascript:alert(1)"}, "URL scheme should be 'http' or 'https'"),
    ("relative-code-path", None, {"--code": "../../etc/passwd"}, "neither an http(s) URL nor a file under baselines/"),
    ("code-path-out-of-baselines", None, {"--code": "baselines/../../x.py"}, "neither an http(s) URL"),
    ("link-splitting-the-table", None, {"--paper": "https://arxiv.org/a|b"}, "must not contain '|'"),
    ("selection-undeclared", None, {"--test-data-for-model-selection": None}, "test_data_for_model_selection"),
    ("other-checkpoint", ("checkpoint.pt", None), {}, "sha256"),
    ("unsafe-checkpoint", ("unsafe", None), {}, "weights_only=True"),
    ("unsafe-torch-checkpoint", ("unsafe-zip", None), {}, "weights_only=True"),
]


def build_argv(submission: Path, root: Path, replaced: dict[str, str | None]) -> list[str]:
    options = {
        "--method": "ProtoNet tiny",
        "--code": CODE,
        "--paper": PAPER,
        "--test-data-for-model-selection": "no",
    } | replaced
    argv = ["submit", str(submission), "--root", str(root)]
    for flag, value in options.items():
        if value is not None:
            argv += [flag, value]
    return argv


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the refused pickle
@pytest.mark.parametrize(("breakage", "replaced", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_forged_or_broken_submissions_are_refused_and_leave_the_leaderboard_untouched(
    breakage, replaced, expected, submission: Path, board_copy: Path, capsys
) -> None:
    if breakage is not None:
        target, change = breakage
        if target == "checkpoint.pt":
            checkpoint = torch.load(submission / target, weights_only=True)
            checkpoint["iteration"] += 1
            torch.save(checkpoint, submission / target)
        elif target.startswith("unsafe"):
            unsafe_checkpoint(submission, zipped=target == "unsafe-zip")
        elif target.endswith(".jsonl"):
            edit_lines(submission / target, change)
        else:
            edit_json(submission / target, change)
    before = tree_state(board_copy)
    capsys.readouterr()
    assert main(build_argv(submission, board_copy, replaced)) == 1
    error = capsys.readouterr().err
    assert error.startswith("metabench: ") and expected in error, error
    assert tree_state(board_copy) == before
    assert not (submission / "pwned").exists()  # nothing was unpickled


def sparse_file(path: Path, size: int) -> Path:
    """``path`` grown to ``size`` bytes without writing them."""
    with open(path, "ab") as stream:
        stream.truncate(size)
    return path


def huge(name: str, size: int) -> Callable[[Path], object]:
    return lambda submission: sparse_file(submission / name, size)


def link(name: str, target: str | None = None) -> Callable[[Path], None]:
    """Replace ``name`` by a symbolic link to ``target``, by default to a 1 GiB file outside the submission."""

    def forge(submission: Path) -> None:
        (submission / name).unlink(missing_ok=True)
        (submission / name).symlink_to(target or sparse_file(submission.parent / "huge", 2**30))

    return forge


def fifo(name: str) -> Callable[[Path], None]:
    def forge(submission: Path) -> None:
        (submission / name).unlink()
        os.mkfifo(submission / name)

    return forge


def replace_text(name: str, old: str, new: str) -> Callable[[Path], None]:
    def forge(submission: Path) -> None:
        text = (submission / name).read_text()
        assert old in text
        (submission / name).write_text(text.replace(old, new, 1))

    return forge


def write_text(name: str, content: str) -> Callable[[Path], int]:
    return lambda submission: (submission / name).write_text(content)


PROTOCOL = '"protocol": {'
METADATA = '{"method": "m", "code": "%s", "test_data_for_model_selection": false, "notes": %s}'
# (id, how the submission folder is forged, expected message)
UNTRUSTED_FILES = [
    ("summary-linked-to-etc-passwd", link(SUMMARY, "/etc/passwd"), "summary.json at"),
    ("checkpoint-linked-to-a-huge-file", link("checkpoint.pt"), "is a symbolic link"),
    ("metadata-linked-outside", link("metadata.json", "/etc/passwd"), "is a symbolic link"),
    ("test-runs-linked-outside", link("test_runs.jsonl", "/etc/passwd"), "is a symbolic link"),
    ("summary-of-100-mb", huge(SUMMARY, 100 * 2**20), "is 104857600 bytes; the leaderboard accepts at most 1048576"),
    ("episodes-over-the-limit", huge(EPISODES, 16 * 2**20 + 1), "accepts at most 16777216"),
    ("metadata-over-the-limit", huge("metadata.json", 64 * 2**10 + 1), "accepts at most 65536"),
    ("checkpoint-over-the-limit", huge("checkpoint.pt", 64 * 2**20 + 1), "accepts at most 67108864"),
    ("summary-not-a-regular-file", fifo(SUMMARY), "is not a regular file"),
    (
        "deeply-nested-protocol",
        replace_text(SUMMARY, PROTOCOL, PROTOCOL + '"deep": ' + "[" * 10_000 + "]" * 10_000 + ", "),
        "nested more than 32 levels deep",
    ),
    ("overflowing-number", replace_text(SUMMARY, PROTOCOL, PROTOCOL + '"big": 1e400, '), "1e400 is not a finite"),
    ("repeated-key", replace_text(SUMMARY, '"results": {', '"results": {}, "results": {'), "key(s) ['results']"),
    ("nan-in-metadata", write_text("metadata.json", METADATA % (CODE, "NaN")), "NaN is not a finite number"),
    ("unpaired-surrogate", write_text("metadata.json", METADATA % (CODE, '"\\ud800"')), "unpaired surrogate"),
    ("deeply-nested-test-run", write_text("test_runs.jsonl", "[" * 10_000), "not a readable record of test runs"),
]


@pytest.mark.parametrize(("forge", "expected"), [u[1:] for u in UNTRUSTED_FILES], ids=[u[0] for u in UNTRUSTED_FILES])
def test_untrusted_files_are_refused_with_a_clear_message(
    forge, expected, submission: Path, board_copy: Path, capsys
) -> None:
    forge(submission)
    before = tree_state(board_copy)
    capsys.readouterr()
    assert main(build_argv(submission, board_copy, {})) == 1
    error = capsys.readouterr().err
    assert error.startswith("metabench: ") and expected in error, error
    assert tree_state(board_copy) == before


def test_declared_model_selection_is_checked_against_the_checkpoint_folders_test_runs(
    board: Path, submission: Path, board_copy: Path, tmp_path: Path, capsys
) -> None:
    # The board's entry came from the run folder, whose record holds the one test run of its checkpoint.
    selection = json.loads((only_entry(board) / "entry.json").read_text())["selection"]
    assert selection == {"test_runs": 1, "checkpoints_tested": 1}
    assert not leaderboard.load_entries(board)[0].test_selected

    # Another checkpoint of the submission's folder was scored on test too: a declared "no" is refused.
    summary = json.loads((submission / "summary.json").read_text())
    record_test_run(submission / "checkpoint.pt", summary)
    record_test_run(submission / "other.pt", summary | {"checkpoint": {"path": "other.pt", "sha256": "0" * 64}})
    before = tree_state(board_copy)
    capsys.readouterr()
    assert main(submit_argv(submission, board_copy)) == 1
    error = capsys.readouterr().err
    assert "2 checkpoints, 1 of them not the submitted one" in error
    assert "evaluate it there" in error and "--test-data-for-model-selection yes" in error
    assert tree_state(board_copy) == before

    # Declared "yes", it is stored, flagged test-selected.
    root = tmp_path / "fresh"
    assert main(build_argv(submission, root, {"--test-data-for-model-selection": "yes"})) == 0
    assert "flagged test-selected" in capsys.readouterr().out
    (entry,) = leaderboard.load_entries(root)
    assert entry.test_selected and entry.record.metadata.test_data_for_model_selection
    assert entry.record.selection == leaderboard.schema.Selection(test_runs=2, checkpoints_tested=2)


def test_duplicates_are_refused(evaluation: Path, submission: Path, board_copy: Path, capsys) -> None:
    before = tree_state(board_copy)
    for argv in (
        submit_argv(submission, board_copy, method="ProtoNet again"),  # same results under another name
        submit_argv(submission, board_copy, "--name", only_entry(board_copy).name),
    ):
        assert main(argv) == 1
        assert "duplicate" in capsys.readouterr().err
        assert tree_state(board_copy) == before
    # The same checkpoint with different per-episode records (e.g. evaluated elsewhere) is a duplicate too.
    valid = leaderboard.validate_submission(
        submission, {"method": "x", "code": CODE, "test_data_for_model_selection": False}
    )
    rescored = {**valid.files, "episodes.jsonl": b"other records"}
    with pytest.raises(leaderboard.LeaderboardError, match="already holds this checkpoint"):
        storage._check_duplicates(
            leaderboard.Submission(valid.summary, valid.records, valid.metadata, rescored, "x"),
            leaderboard.load_entries(board_copy),
            board_copy,
        )


def test_malicious_metadata_file_is_refused(submission: Path, board_copy: Path, capsys) -> None:
    metadata = {"method": "../../../tmp/x", "code": CODE, "test_data_for_model_selection": False}
    (submission / "metadata.json").write_text(json.dumps(metadata))
    before = tree_state(board_copy)
    assert main(["submit", str(submission), "--root", str(board_copy)]) == 1
    assert "looks like a path" in capsys.readouterr().err
    assert tree_state(board_copy) == before


def test_a_failure_while_storing_leaves_no_partial_entry(submission: Path, board_copy: Path, monkeypatch) -> None:
    shutil.rmtree(board_copy / ENV)  # an empty leaderboard, so that the submission is not a duplicate
    leaderboard.rebuild(board_copy)
    before = tree_state(board_copy)

    def broken_rename(source: str, target: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "rename", broken_rename)
    metadata = {"method": "ProtoNet tiny", "code": CODE, "test_data_for_model_selection": False}
    with pytest.raises(OSError, match="disk full"):
        leaderboard.submit(submission, metadata, root=board_copy)
    assert tree_state(board_copy) == before


def test_entry_names_are_sanitised() -> None:
    assert leaderboard.slug("MAML++ (Finn et al., 2017) / ../x") == "maml-finn-et-al.-2017-.-x"
    assert leaderboard.slug("...") == "entry"
    assert len(leaderboard.slug("a" * 500)) <= 48
    for name in ("../x", "a/b", "/abs", ".hidden", "a\0b", "", "a" * 81, "x y"):
        with pytest.raises(leaderboard.LeaderboardError):
            leaderboard.check_name(name)
    assert leaderboard.check_name("protonet-0123abcd.v2_x") == "protonet-0123abcd.v2_x"


def test_verify_refuses_paths_outside_the_leaderboard(board_copy: Path, capsys) -> None:
    for entry in ("../../etc", "/etc/passwd", "a/b/c"):
        assert main(["leaderboard", "verify", entry, "--root", str(board_copy)]) == 1
        assert "metabench:" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- verification


def test_verify_marks_a_reproduced_entry_verified(board_copy: Path, capsys) -> None:
    entry = only_entry(board_copy)
    assert "unverified" in (board_copy / "README.md").read_text()
    assert main(["leaderboard", "verify", f"{ENV}/{entry.name}", "--root", str(board_copy)]) == 0
    assert "verified: " in capsys.readouterr().out
    verification = json.loads((entry / "verification.json").read_text())
    assert verification["verified"] is True and verification["mismatched_episodes"] == 0
    assert verification["episodes"] == 1000 and verification["checkpoint_sha256"] == leaderboard.sha256_bytes(
        (entry / "checkpoint.pt").read_bytes()
    )
    readme = (board_copy / "README.md").read_text()
    assert "unverified" not in readme and "| verified |" in readme
    for chart in parse_charts((board_copy / "index.html").read_text()):
        assert chart_points(chart) == [(entry.name, "point verified", True)]  # now a filled point
    assert leaderboard.load_entries(board_copy)[0].verified


def tamper_weights(entry: Path) -> bytes:
    checkpoint = torch.load(entry / "checkpoint.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, value in checkpoint["learner"]["params"].items():
        checkpoint["learner"]["params"][name] = value + 0.5 * torch.randn(value.shape, generator=generator)
    torch.save(checkpoint, entry / "checkpoint.pt")
    return (entry / "checkpoint.pt").read_bytes()


def test_verify_reports_a_tampered_checkpoint_and_does_not_mark_it(board_copy: Path, capsys) -> None:
    entry = only_entry(board_copy)
    content = tamper_weights(entry)
    before = tree_state(board_copy)
    assert main(["leaderboard", "verify", str(entry), "--root", str(board_copy)]) == 1
    assert "checkpoint.pt was modified after submission" in capsys.readouterr().out
    assert tree_state(board_copy) == before

    # A consistent forgery (every recorded hash rewritten to the new weights) is caught by re-running them.
    digest = hashlib.sha256(content).hexdigest()
    edit_json(entry / "summary.json", lambda s: s["checkpoint"].update(sha256=digest))
    summary_digest = hashlib.sha256((entry / "summary.json").read_bytes()).hexdigest()
    edit_json(
        entry / "entry.json", lambda e: e["files"].update({"checkpoint.pt": digest, "summary.json": summary_digest})
    )
    before = tree_state(board_copy)
    report = leaderboard.verify(f"{ENV}/{entry.name}", board_copy)
    assert not report.passed and "re-scored episodes differ from the stored ones" in report.message
    assert report.details["mismatched_episodes"] > 0
    assert not (entry / "verification.json").exists() and tree_state(board_copy) == before
    assert not leaderboard.load_entries(board_copy)[0].verified


def test_hand_edited_entries_are_flagged_and_not_verified(board_copy: Path, capsys) -> None:
    entry = only_entry(board_copy)
    edit_json(entry / "entry.json", lambda e: e["budget"].update(episodes_seen=10))  # understate the budget
    assert main(["leaderboard", "--root", str(board_copy)]) == 0
    assert "entry.json disagrees with summary.json" in capsys.readouterr().out
    assert "modified" in (board_copy / "README.md").read_text()
    report = leaderboard.verify(entry, board_copy)
    assert not report.passed and "disagrees" in report.message


def test_compare_records_tolerates_float_noise_and_rare_argmax_flips() -> None:
    stored = [leaderboard.EpisodeRecord(episode=i, reward=-1.0, accuracy=0.72) for i in range(200)]
    rerun = [{"episode": i, "reward": -1.0 + 1e-6, "accuracy": 0.72} for i in range(200)]
    assert leaderboard.compare_records(stored, rerun, 75)[0]
    rerun[5]["accuracy"] = 0.72 + 1 / 75
    assert leaderboard.compare_records(stored, rerun, 75)[0]
    rerun[6]["accuracy"] = 0.72 + 1 / 75
    rerun[7]["accuracy"] = 0.72 + 1 / 75
    assert not leaderboard.compare_records(stored, rerun, 75)[0]  # 3 flips in 200 episodes > 1%
    rerun = [{"episode": i, "reward": -1.01, "accuracy": 0.72} for i in range(200)]
    assert not leaderboard.compare_records(stored, rerun, 75)[0]
    assert math.isclose(leaderboard.compare_records(stored, rerun, 75)[1]["max_reward_abs_diff"], 0.01)


def test_compare_records_allows_more_rounding_across_device_types_only() -> None:
    stored = [leaderboard.EpisodeRecord(episode=i, reward=-0.05, accuracy=1.0) for i in range(100)]
    # a GPU entry re-run on CPU: rounding of up to 8e-4 an episode, either way
    rerun = [{"episode": i, "reward": -0.05 + (-1) ** i * 8e-4, "accuracy": 1.0} for i in range(100)]
    assert not leaderboard.compare_records(stored, rerun, 75)[0]
    assert leaderboard.compare_records(stored, rerun, 75, leaderboard.CROSS_DEVICE_REWARD_ATOL)[0]
    rerun[0]["reward"] = -0.05 + 1e-2
    assert not leaderboard.compare_records(stored, rerun, 75, leaderboard.CROSS_DEVICE_REWARD_ATOL)[0]
    # the same 8e-4 in the submitter's favour on every episode is no rounding: the mean difference is bounded
    shifted = [{"episode": i, "reward": -0.05 + 8e-4, "accuracy": 1.0} for i in range(100)]
    matches, details = leaderboard.compare_records(stored, shifted, 75, leaderboard.CROSS_DEVICE_REWARD_ATOL)
    assert not matches and details["mismatched_episodes"] == 0 and math.isclose(details["mean_reward_diff"], 8e-4)


# --------------------------------------------------------------------------------------------- the HTML page


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_html_page_renders_in_a_headless_browser(board: Path, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = board / "index.html"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    entry = only_entry(board).name
    assert '<table class="leaderboard">' in dom
    assert f'<tr class="entry" data-entry="{entry}">' in dom and "ProtoNet tiny" in dom
    for chart in ("chart chart-accuracy", "chart chart-compute"):
        assert f'<svg class="{chart}" data-env="{ENV}"' in dom
    assert dom.count("<svg") == 2 and dom.count(f'class="point unverified" data-entry="{entry}"') == 2
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={screenshot}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_protocol_check_compares_as_json_stores_it(monkeypatch):
    """A registry protocol with tuples (e.g. MetaAugment's ops) equals the lists summary.json holds."""
    from types import SimpleNamespace

    from metabench import evaluation

    monkeypatch.setattr(evaluation, "test_protocol", lambda env_id: {"ops": ("identity", "rotate"), "episodes": 32})

    def summary(ops: list[str]) -> SimpleNamespace:
        return SimpleNamespace(note=None, env_id="MetaAugment-Omniglot-5w1s-v0", protocol={"ops": ops, "episodes": 32})

    leaderboard.check_protocol(summary(["identity", "rotate"]))
    with pytest.raises(leaderboard.LeaderboardError, match="ops"):
        leaderboard.check_protocol(summary(["identity"]))


# ---------------------------------------------------------------------------------- trust: the attacks of issue 12
# What makes an entry verified is a re-run (CI's `metabench leaderboard check`), never a file someone wrote; copies of a
# checkpoint are duplicates by content; unverified entries are never ranked with verified ones.


def rewrite_episodes(path: Path, change) -> None:
    """Apply ``change`` to every record of ``path/episodes.jsonl`` and recompute the summary's results from them."""
    records = [json.loads(line) for line in (path / "episodes.jsonl").read_text().splitlines()]
    for record in records:
        change(record)
    (path / "episodes.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    recomputed = leaderboard.recompute_results([leaderboard.EpisodeRecord(**record) for record in records])
    edit_json(path / "summary.json", lambda s: s["results"].update(recomputed))


def one_more_correct_query(record: dict) -> None:
    """Raise an episode's accuracy by one query of 75 (the forger's +0.01 average is a few such episodes)."""
    record["accuracy"] = min(1.0, round(record["accuracy"] * 75 + 1) / 75)
    record["reward"] = record["reward"] * 0.9


def add_extra_key(path: Path) -> None:
    """Re-save the checkpoint with one extra key (new file bytes, same weights) and point the summary at it."""
    checkpoint = torch.load(path / "checkpoint.pt", weights_only=True)
    checkpoint["learner"]["padding"] = torch.zeros(3)
    checkpoint["learner"] = dict(reversed(list(checkpoint["learner"].items())))  # and reorder it
    torch.save(checkpoint, path / "checkpoint.pt")
    digest = hashlib.sha256((path / "checkpoint.pt").read_bytes()).hexdigest()
    edit_json(path / "summary.json", lambda s: s["checkpoint"].update(sha256=digest))


def test_inflated_copy_with_an_extra_checkpoint_key_is_refused_as_a_duplicate(
    submission: Path, board_copy: Path, capsys
) -> None:
    rewrite_episodes(submission, one_more_correct_query)
    add_extra_key(submission)
    before = tree_state(board_copy)
    assert main(submit_argv(submission, board_copy, method="ProtoNet improved")) == 1
    assert "already holds this checkpoint's weights" in capsys.readouterr().err
    assert tree_state(board_copy) == before


def test_weights_fingerprint_ignores_names_order_and_extra_keys_but_not_values(evaluation: Path, tmp_path: Path):
    original = (evaluation.parent / "checkpoint.pt").read_bytes()
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes(original)
    (copy / "summary.json").write_text('{"checkpoint": {}}')
    add_extra_key(copy)
    base = leaderboard.weights_fingerprint(original)
    padded = leaderboard.weights_fingerprint((copy / "checkpoint.pt").read_bytes())
    assert not base - padded and padded - base  # the copy holds every tensor of the original
    checkpoint = torch.load(copy / "checkpoint.pt", weights_only=True)
    checkpoint["learner"]["params"]["conv0.weight"] += 1e-3
    torch.save(checkpoint, copy / "checkpoint.pt")
    assert base - leaderboard.weights_fingerprint((copy / "checkpoint.pt").read_bytes())  # new weights: not a copy


def test_a_hand_written_verification_is_caught_by_the_check(board_copy: Path, capsys) -> None:
    entry = only_entry(board_copy)
    rewrite_episodes(entry, one_more_correct_query)  # forge the stored results in place ...
    episodes = hashlib.sha256((entry / "episodes.jsonl").read_bytes()).hexdigest()
    summary = hashlib.sha256((entry / "summary.json").read_bytes()).hexdigest()
    edit_json(entry / "entry.json", lambda e: e["files"].update({"episodes.jsonl": episodes, "summary.json": summary}))
    checkpoint = json.loads((entry / "entry.json").read_text())["files"]["checkpoint.pt"]
    verification = {  # ... and claim a re-run that never happened
        "format": "metabench-leaderboard-verification/1",
        "verified": True,
        "checkpoint_sha256": checkpoint,
        "episodes_sha256": episodes,
        "device": "cpu",
        "episodes": 1000,
    }
    (entry / "verification.json").write_text(json.dumps(verification))
    assert leaderboard.load_entries(board_copy)[0].verified  # the file alone would display it as verified
    before = tree_state(board_copy)
    assert main(["leaderboard", "check", "--root", str(board_copy)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {ENV}/{entry.name}: audit (seed" in out and "re-scored episodes differ" in out
    assert tree_state(board_copy) == before  # the check writes nothing


def test_check_audits_verified_entries_and_fully_reruns_the_others(board_copy: Path, capsys) -> None:
    entry = only_entry(board_copy)
    report, views = leaderboard.check(board_copy)
    assert report.passed and report.mode == "full re-run" and report.episodes == 1000 and views.passed
    assert leaderboard.verify(f"{ENV}/{entry.name}", board_copy).passed
    report, views = leaderboard.check(board_copy, seed=7)
    assert report.passed and report.mode == "audit (seed 7)" and report.episodes == leaderboard.AUDIT_TASKS
    assert main(["leaderboard", "check", "--root", str(board_copy), "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "audit seed 7 (reproduce this check with --seed 7)" in out
    assert f"ok   {ENV}/{entry.name}: audit (seed 7), 100 episodes reproduced" in out and "ok   views" in out


def test_audit_episodes_come_from_the_seed_and_the_registry_not_from_the_entry(board_copy: Path) -> None:
    label = f"{ENV}/{only_entry(board_copy).name}"
    sample = leaderboard.audit_episodes(ENV, label, 7)
    assert sample == leaderboard.audit_episodes(ENV, label, 7) and len(set(sample)) == leaderboard.AUDIT_TASKS
    assert all(0 <= i < 1000 for i in sample) and sample == sorted(sample)
    assert len({i // 25 for i in sample}) > 20  # single episodes, spread over the protocol's 25-episode chunks
    assert leaderboard.audit_episodes(ENV, label, 8) != sample  # a fresh seed per CI run: a fresh sample
    assert leaderboard.new_audit_seed() != leaderboard.new_audit_seed()
    # what the entry says of its protocol changes nothing: the sizes are the registry's
    edit_json(only_entry(board_copy) / "summary.json", protocol(episodes=50, tasks_per_step=1000))
    assert leaderboard.audit_episodes(ENV, label, 7) == sample


def test_unverified_entries_are_listed_apart_from_the_ranking(board_copy: Path, submission: Path) -> None:
    verified = only_entry(board_copy)
    assert leaderboard.verify(f"{ENV}/{verified.name}", board_copy).passed
    # a genuinely different checkpoint with better (forged) results stays unverified: it is not ranked above
    checkpoint = torch.load(submission / "checkpoint.pt", weights_only=True)
    checkpoint["learner"]["params"]["conv0.weight"] += 1e-3
    torch.save(checkpoint, submission / "checkpoint.pt")
    digest = hashlib.sha256((submission / "checkpoint.pt").read_bytes()).hexdigest()
    edit_json(submission / "summary.json", lambda s: s["checkpoint"].update(sha256=digest))
    rewrite_episodes(submission, one_more_correct_query)
    leaderboard.submit(
        submission,
        {"method": "ProtoNet improved", "code": CODE, "test_data_for_model_selection": False},
        root=board_copy,
        checkpoint=submission / "checkpoint.pt",
    )
    readme = (board_copy / "README.md").read_text()
    ranked, apart = readme.split("**Unverified (not ranked with verified entries)**")
    assert "ProtoNet tiny" in ranked and "ProtoNet improved" not in ranked
    assert "| 1 | ProtoNet improved" in apart
    assert "Protocol: 1,000 test episodes" in readme
