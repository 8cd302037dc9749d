"""The leaderboard: submission, validation (each refusal leaves the leaderboard byte-identical), views, verification.

One real but tiny protonet run (3 iterations, width 16) is evaluated once on the protocol's 1,000
test episodes through `metabench evaluate`; every forged submission is a copy of it with one thing
broken.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metabench import leaderboard
from metabench.cli import main
from metabench.training import train

ENV = "MetaOmniglot-5w1s-v0"
CODE = "https://github.com/example/metabench"
PAPER = "https://arxiv.org/abs/1703.05175"


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
    leaderboard.submit(submission, root=root, checkpoint=evaluation.parent / "checkpoint.pt", today="2026-01-01")
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
    assert record["budget"]["iterations"] == 3 and record["budget"]["episodes_seen"] == 3
    assert record["seeds"] == {"training": 0, "test_episodes": 2026}
    assert record["command"] == summary["command"] and record["command"].startswith("metabench evaluate")
    assert record["transductive"] is False and record["metabench_version"] == summary["run"]["metabench_version"]

    readme = (root / "README.md").read_text()
    accuracy = f"{100 * summary['results']['accuracy_mean']:.2f} ± {100 * summary['results']['accuracy_ci95']:.2f} %"
    assert f"## {ENV}" in readme and accuracy in readme and "unverified" in readme and entry.name in readme
    assert "3 it × 1 = 3 episodes" in readme
    html_page = (root / "index.html").read_text()
    assert 'class="chart chart-accuracy"' in html_page and 'class="chart chart-compute"' in html_page

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


def unsafe_checkpoint(path: Path) -> None:
    import pickle

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
    ("budget-lie", (SUMMARY, lambda s: s["training"].update(iterations=60000)), {}, "training block"),
    ("malicious-entry-name", None, {"--name": "../../etc"}, "path component"),
    ("absolute-entry-name", None, {"--name": "/etc/passwd"}, "absolute path"),
    ("hidden-entry-name", None, {"--name": ".hidden"}, "[A-Za-z0-9._-]"),
    ("malicious-method-name", None, {"--method": "../../etc"}, "looks like a path"),
    ("method-name-with-newline", None, {"--method": "ProtoNet\n| fake | row |"}, "control characters"),
    ("missing-code-link", None, {"--code": None}, "code: Field required"),
    ("missing-method", None, {"--method": None}, "method: Field required"),
    ("javascript-link", None, {"--code": "javascript:alert(1)"}, "URL scheme should be 'http' or 'https'"),
    ("test-data-used-for-selection", None, {"--test-data-for-model-selection": "yes"}, "not accepted"),
    ("selection-undeclared", None, {"--test-data-for-model-selection": None}, "test_data_for_model_selection"),
    ("other-checkpoint", ("checkpoint.pt", None), {}, "sha256"),
    ("unsafe-checkpoint", ("unsafe", None), {}, "weights_only=True"),
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
        elif target == "unsafe":
            unsafe_checkpoint(submission)
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
        leaderboard._check_duplicates(
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

    monkeypatch.setattr(leaderboard.os, "rename", broken_rename)
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
    assert 'class="point verified"' in (board_copy / "index.html").read_text()
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
    assert main(["leaderboard", "verify", str(entry)]) == 1
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
    assert not report.verified and "does not reproduce the stored episodes" in report.message
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
    assert not report.verified and "disagrees" in report.message


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
    rerun = [{"episode": i, "reward": -0.05 + 8e-4, "accuracy": 1.0} for i in range(100)]  # a GPU entry re-run on CPU
    assert not leaderboard.compare_records(stored, rerun, 75)[0]
    assert leaderboard.compare_records(stored, rerun, 75, leaderboard.CROSS_DEVICE_REWARD_ATOL)[0]
    rerun[0]["reward"] = -0.05 + 1e-2
    assert not leaderboard.compare_records(stored, rerun, 75, leaderboard.CROSS_DEVICE_REWARD_ATOL)[0]


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
    assert dom.count("<circle") == 2 and dom.count("<svg") == 2  # one point per entry in each chart
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
