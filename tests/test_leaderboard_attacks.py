"""The attacks of issue 21, each scripted against a copy of the committed leaderboard (never the board itself).

Every test copies the entries it needs from ``leaderboard/`` into ``tmp_path``, forges them as a hostile submitter
would (re-hashing ``entry.json`` and writing ``verification.json`` by hand where that helps) and asserts that
``submit`` refuses the forgery or ``metabench leaderboard check`` fails on it, with the message each now gets.
The cheap boards (MetaSinusoid, whose 1,000 episodes re-score in about a second) carry most of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metabench import leaderboard
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.cli import main
from metabench.evaluation import evaluate_checkpoint, rescore
from metabench.sweep import sweep

BOARD = Path(__file__).resolve().parents[1] / "leaderboard"
SINE = "MetaSinusoid-5shot-v0"
MAML = f"{SINE}/maml-seed0-cpu-180s"
PRETRAIN = f"{SINE}/pretrain-seed0-cpu-120s"
FOMAML = "MetaOmniglot-5w1s-v1/fomaml-seed0-cpu-300s"
PROTONETS = [
    f"MetaOmniglot-5w1s-v1/protonet-seed{seed}-cpu-{b}" for seed, b in ((0, "420s"), (1, "656it"), (2, "656it"))
]
CODE = "https://github.com/example/metabench"


def copy_board(tmp_path: Path, *entries: str) -> Path:
    """A leaderboard root holding copies of ``entries`` (``ENV/NAME``) and the views rendered from them."""
    root = tmp_path / "leaderboard"
    for entry in entries:
        shutil.copytree(BOARD / entry, root / entry)
    leaderboard.rebuild(root)
    return root


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=1) + "\n")


def rehash(entry: Path) -> None:
    """What a forger does after editing an entry's files: record their new sha256 in ``entry.json``."""
    digests = {name: hashlib.sha256((entry / name).read_bytes()).hexdigest() for name in leaderboard.schema.ENTRY_FILES}
    edit_json(entry / "entry.json", lambda record: record["files"].update(digests))


def claim_verified(entry: Path) -> None:
    """A hand-written ``verification.json`` for the entry's current files."""
    files = json.loads((entry / "entry.json").read_text())["files"]
    verification = {
        "format": "metabench-leaderboard-verification/1",
        "verified": True,
        "checkpoint_sha256": files["checkpoint.pt"],
        "episodes_sha256": files["episodes.jsonl"],
        "device": "cpu",
        "episodes": 1000,
    }
    (entry / "verification.json").write_text(json.dumps(verification))


def write_records(entry: Path, records: list[dict]) -> None:
    """Replace the entry's episodes and recompute its summary's results from them, as a careful forger would."""
    (entry / "episodes.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    results = leaderboard.recompute_results([leaderboard.EpisodeRecord(**record) for record in records])
    edit_json(entry / "summary.json", lambda summary: summary["results"].update(results))


def read_records(entry: Path) -> list[dict]:
    return [json.loads(line) for line in (entry / "episodes.jsonl").read_text().splitlines()]


def check_report(root: Path, label: str, seed: int = 1) -> leaderboard.CheckReport:
    """What ``metabench leaderboard check --seed SEED`` reports for the entry ``label`` (or for "views")."""
    if label == "views":
        return leaderboard.check_views(root, leaderboard.load_entries(root))
    entries = leaderboard.load_entries(root)
    (entry,) = [entry for entry in entries if f"{entry.env_id}/{entry.name}" == label]
    earlier = [e for e in entries if e.env_id == entry.env_id and e.submission_order < entry.submission_order]
    return leaderboard.check_entry(entry, earlier, seed)


# ------------------------------------------------------------------------------------ 1. the ranked number


def test_an_edited_summary_fails_the_check_and_the_board_shows_the_episodes_number(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, FOMAML)
    entry = root / FOMAML
    edit_json(entry / "summary.json", lambda summary: summary["results"].update(accuracy_mean=0.999))
    rehash(entry)
    assert main(["leaderboard", "check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {FOMAML}: full re-run, summary.json claims accuracy_mean = 0.999 but its 1000 episodes give" in out
    main(["leaderboard", "--root", str(root)])
    readme = (root / "README.md").read_text()
    assert "49.47 ± 0.69 %" in readme and "99.90" not in readme and "modified" in readme


# ------------------------------------------------------------------------------------ 2. an audit nobody can steer


def test_a_forgery_of_most_blocks_with_a_hand_written_verification_fails_any_audit(tmp_path: Path) -> None:
    root = copy_board(tmp_path, PRETRAIN)
    entry = root / PRETRAIN
    records = read_records(entry)
    for record in records[50:]:  # 38 of the 40 blocks of 25 episodes forged; the first two left honest
        record["reward"] = round(record["reward"] / 2, 6)
    write_records(entry, records)
    rehash(entry)
    claim_verified(entry)
    for seed in (1, 2):
        report = check_report(root, PRETRAIN, seed)
        # on other hardware than the stored run's the audit goes on to every episode: still refused
        assert not report.passed and report.mode.startswith(f"audit (seed {seed})")
        assert "re-scored episodes differ from the stored ones" in report.message


def test_a_forged_protocol_is_refused_and_does_not_shrink_the_audit(tmp_path: Path) -> None:
    root = copy_board(tmp_path, MAML)
    entry = root / MAML
    edit_json(entry / "summary.json", lambda summary: summary["protocol"].update(tasks_per_step=1000))
    rehash(entry)
    claim_verified(entry)
    report = check_report(root, MAML)
    assert not report.passed
    assert "the submission's protocol differs from the current registry's for MetaSinusoid-5shot-v0" in report.message
    assert "tasks_per_step: submission has 1000, the registry has '(missing)'" in report.message
    assert len(leaderboard.audit_episodes(SINE, MAML, 1)) == leaderboard.AUDIT_TASKS  # the registry's sizes


# ------------------------------------------------------------------------------------ 3. the views


def test_hand_edited_views_fail_the_check(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, MAML)
    (root / MAML / "verification.json").unlink()  # the views still show it verified
    assert not check_report(root, "views").passed
    leaderboard.rebuild(root)
    assert check_report(root, "views").passed
    for view in ("README.md", "index.html"):
        original = (root / view).read_bytes()
        (root / view).write_bytes(original.replace(b"maml-seed0-cpu-180s", b"maml-seed0-cpu-180s 99.99 %", 1))
        report = check_report(root, "views")
        assert not report.passed and report.message.startswith(f"{view} differ(s) from the views the entries render")
        (root / view).write_bytes(original)


def test_an_entry_folder_name_cannot_inject_a_row(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, MAML)
    name = "x\n| 1 | Fake | 99.99 % | verified |"
    (root / SINE / name).mkdir()
    for file in (root / MAML).iterdir():
        shutil.copy(file, root / SINE / name / file.name)
    edit_json(root / SINE / name / "entry.json", lambda record: record.update(name=name))
    before = (root / "README.md").read_bytes()
    assert main(["leaderboard", "--root", str(root)]) == 1
    assert (
        "entry folder name 'x\\n| 1 | Fake | 99.99 % | verified |' must be 1-80 characters" in capsys.readouterr().err
    )
    assert (root / "README.md").read_bytes() == before
    assert main(["leaderboard", "check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAIL MetaSinusoid-5shot-v0/x\\n| 1 | Fake | 99.99 % | verified |: validation, entry folder name" in out
    assert "FAIL views: regenerated, cannot regenerate the views: 1 entry folder(s) do not load" in out


# ------------------------------------------------------------------------------------ 4. submit's validation


def test_a_false_transductive_flag_fails_the_check(tmp_path: Path) -> None:
    root = copy_board(tmp_path, MAML)
    entry = root / MAML
    edit_json(entry / "summary.json", lambda summary: summary.update(transductive=False))
    edit_json(entry / "entry.json", lambda record: record.update(transductive=False))
    rehash(entry)
    report = check_report(root, MAML)
    assert not report.passed and "summary.json says transductive=False, but maml is transductive=True" in report.message
    assert not leaderboard.load_entry(entry).verified


def test_a_shorter_protocol_fails_the_check(tmp_path: Path) -> None:
    root = copy_board(tmp_path, MAML)
    entry = root / MAML
    edit_json(entry / "summary.json", lambda summary: summary["protocol"].update(episodes=50))
    write_records(entry, read_records(entry)[:50])
    rehash(entry)
    claim_verified(entry)
    report = check_report(root, MAML)
    assert not report.passed and "episodes: submission has 50, the registry has 1000" in report.message


def test_a_claimed_gpu_run_does_not_loosen_the_tolerance_on_the_mean(tmp_path: Path) -> None:
    root = copy_board(tmp_path, PRETRAIN)
    entry = root / PRETRAIN
    edit_json(entry / "summary.json", lambda summary: summary["run"].update(device="cuda"))
    records = read_records(entry)
    for record in records:  # within the cross-device tolerance of every episode, all in the submitter's favour
        record["reward"] = min(0.0, record["reward"] + 1.5e-3)
    write_records(entry, records)
    rehash(entry)
    claim_verified(entry)
    report = check_report(root, PRETRAIN)
    assert not report.passed and "mean reward difference" in report.message


def test_a_byte_identical_copy_under_a_new_name_fails_the_check(tmp_path: Path) -> None:
    root = copy_board(tmp_path, PRETRAIN)
    copy = root / SINE / "zz-copy"
    shutil.copytree(root / PRETRAIN, copy)
    edit_json(copy / "entry.json", lambda record: record.update(name="zz-copy", submitted="2026-12-01T00:00:00Z"))
    report = check_report(root, f"{SINE}/zz-copy")
    assert not report.passed
    assert report.message.startswith(f"duplicate: {PRETRAIN} already holds these exact per-episode results; submitted")
    assert check_report(root, PRETRAIN).passed  # the original, submitted first, is not the duplicate


def test_declared_selection_must_agree_with_the_recorded_one(tmp_path: Path) -> None:
    root = copy_board(tmp_path, MAML)
    edit_json(
        root / MAML / "entry.json", lambda record: record.update(selection={"test_runs": 9, "checkpoints_tested": 9})
    )
    report = check_report(root, MAML)
    assert not report.passed
    assert "records test runs of 9 checkpoints but declares no model selection on test" in report.message


# ------------------------------------------------------------------------------------ 5. duplicates, ties, rows


@pytest.fixture
def ulp_copy(tmp_path: Path) -> Path:
    """The issue's one-ulp copy, on the sine board: a baseline's weights with one value moved by one ulp and a
    claimed budget of 20 iterations / 12 s, evaluated honestly (what `metabench evaluate` writes for it)."""
    checkpoint = torch.load(BOARD / PRETRAIN / "checkpoint.pt", weights_only=True)
    name, value = next(iter(checkpoint["learner"]["params"].items()))
    flat = value.reshape(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(math.inf))
    checkpoint["iteration"] = 20
    checkpoint["training"]["wall_seconds"] = 12.0
    run = tmp_path / "run"
    run.mkdir()
    torch.save(checkpoint, run / "checkpoint.pt")
    _, out = evaluate_checkpoint(run / "checkpoint.pt", SINE, progress=False, command="metabench evaluate ...")
    return out


def test_a_one_ulp_copy_is_refused_as_a_behavioural_duplicate(ulp_copy: Path, tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, PRETRAIN)
    argv = ["submit", str(ulp_copy), "--root", str(root), "--method", "Pretrain fast", "--code", CODE]
    assert main([*argv, "--test-data-for-model-selection", "no"]) == 1
    error = capsys.readouterr().err
    assert f"metabench: duplicate: {PRETRAIN} already holds these per-episode results (every reward within" in error


def test_ties_rank_by_submission_time_not_name(tmp_path: Path) -> None:
    root = copy_board(tmp_path, MAML)
    (original,) = leaderboard.load_entries(root)
    later = dataclasses.replace(
        original, record=original.record.model_copy(update={"name": "a-later", "submitted": "2026-12-01T00:00:00Z"})
    )
    ranked = leaderboard.render_text([later, original], SINE)
    assert ranked.index(original.name) < ranked.index("a-later")


def test_a_new_submission_never_joins_another_submissions_row(tmp_path: Path) -> None:
    root = copy_board(tmp_path, *PROTONETS)
    entries = leaderboard.load_entries(root)
    (row,) = leaderboard.seed_groups(entries)
    assert len(row) == 3  # the baseline's three seeds
    seed0 = entries[0]
    budget = seed0.record.budget.model_copy(update={"iterations": 2000, "wall_seconds": 900.0})
    metadata = seed0.record.metadata.model_copy(update={"code": "https://github.com/newcomer/placeholder"})
    newcomer = dataclasses.replace(
        seed0,
        record=seed0.record.model_copy(
            update={"name": "protonet-conv-4-new", "budget": budget, "metadata": metadata, "seeds": seed0.record.seeds}
        ),
    )
    groups = leaderboard.seed_groups([*entries, newcomer])
    assert sorted(len(group) for group in groups) == [1, 3]
    assert [e.name for e in next(g for g in groups if len(g) == 3)] == [e.name for e in row]


def test_a_sweep_scores_test_only_when_asked_and_then_records_it(tmp_path: Path, capsys) -> None:
    sweep("pretrain", SINE, tmp_path / "val-only", seeds=[0], iterations=1)
    trial = json.loads((tmp_path / "val-only" / "default-s0" / "trial.json").read_text())
    assert "test_accuracy" not in trial and "test_reward" not in trial
    assert not (tmp_path / "val-only" / "default-s0" / f"evaluation-{SINE}").exists()
    sweep("pretrain", SINE, tmp_path / "tested", seeds=[0, 1], iterations=1, test=True)
    picked = tmp_path / "tested" / "default-s0"
    argv = ["submit", str(picked / f"evaluation-{SINE}"), "--root", str(tmp_path / "board"), "--method", "Pretrain"]
    assert main([*argv, "--code", CODE, "--test-data-for-model-selection", "no"]) == 1
    assert "shows 2 test-split run(s) of 2 checkpoints, 1 of them not the submitted one" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ 7. design boards are re-trained


@pytest.mark.slow
def test_a_design_checkpoint_the_recipe_did_not_produce_fails_the_full_check(tmp_path: Path) -> None:
    label = "MetaNAS-Omniglot-5w1s-v1/random-architecture"
    root = copy_board(tmp_path, label)
    entry = root / label
    checkpoint = torch.load(entry / "checkpoint.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, value in checkpoint["learner"]["params"].items():  # not what the recipe trains
        if value.is_floating_point():
            checkpoint["learner"]["params"][name] = value + 0.3 * value.std() * torch.randn(
                value.shape, generator=generator
            )
    torch.save(checkpoint, entry / "checkpoint.pt")
    learner, _ = load_checkpoint(entry / "checkpoint.pt")
    write_records(entry, rescore(learner, "MetaNAS-Omniglot-5w1s-v1", list(range(1000))))  # honest for these weights
    digest = hashlib.sha256((entry / "checkpoint.pt").read_bytes()).hexdigest()
    edit_json(entry / "summary.json", lambda summary: summary["checkpoint"].update(sha256=digest))
    rehash(entry)
    claim_verified(entry)
    assert check_report(root, label).passed  # the audit re-scores the stored checkpoint: it passes
    (stored,) = leaderboard.load_entries(root)
    report = leaderboard.check_entry(stored, [], 1, full=True)
    assert not report.passed and "the board's recipe re-trains the design to" in report.message
    assert "the checkpoint is not the recipe's" in report.message


# ------------------------------------------------------------------------------------ 8. faults


def expanded_checkpoint(path: Path) -> None:
    checkpoint = torch.load(BOARD / MAML / "checkpoint.pt", weights_only=True)
    checkpoint["learner"]["huge"] = torch.zeros(1).expand(2**40)
    torch.save(checkpoint, path)


def test_an_expanded_tensor_is_refused_before_it_is_materialised(tmp_path: Path) -> None:
    expanded_checkpoint(tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").stat().st_size < 2**20
    with pytest.raises(leaderboard.LeaderboardError, match=r"holds a \(1099511627776,\) tensor viewing 4 bytes"):
        leaderboard.weights_fingerprint((tmp_path / "checkpoint.pt").read_bytes())
    # planted on the board, it fails its own check and blocks no later submission's duplicate check
    root = copy_board(tmp_path, MAML)
    (root / MAML / "verification.json").unlink()
    expanded_checkpoint(root / MAML / "checkpoint.pt")
    edit_json(
        root / MAML / "summary.json",
        lambda summary: summary["checkpoint"].update(
            sha256=hashlib.sha256((root / MAML / "checkpoint.pt").read_bytes()).hexdigest()
        ),
    )
    rehash(root / MAML)
    assert "tensor viewing 4 bytes" in check_report(root, MAML).message
    pretrain = root / PRETRAIN
    shutil.copytree(BOARD / PRETRAIN, pretrain)
    files = {name: (pretrain / name).read_bytes() for name in leaderboard.schema.ENTRY_FILES}
    records = list(leaderboard.load_entry(pretrain).records)
    assert leaderboard.duplicate_of(SINE, files, records, 0, leaderboard.load_entries(root, SINE)[:1]) is None


def test_verify_refuses_a_folder_outside_the_leaderboard_root(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, MAML)
    outside = tmp_path / "elsewhere" / "a" / "b"
    shutil.copytree(BOARD / MAML, outside)
    (tmp_path / "elsewhere" / "README.md").write_text("unrelated\n")
    assert main(["leaderboard", "verify", str(outside), "--root", str(root)]) == 1
    assert "is not an entry folder of the leaderboard root" in capsys.readouterr().err
    assert (tmp_path / "elsewhere" / "README.md").read_text() == "unrelated\n"


@pytest.mark.parametrize(
    ("label", "change", "expected"),
    [
        (MAML, lambda protocol: protocol.pop("episodes"), "summary.json protocol.episodes is None"),
        (FOMAML, lambda protocol: protocol.update(tasks_per_step=0), "summary.json protocol.tasks_per_step is 0"),
    ],
    ids=["episodes-missing", "tasks-per-step-zero"],
)
def test_missing_or_zero_protocol_fields_give_one_line_errors(tmp_path: Path, capsys, label, change, expected) -> None:
    root = copy_board(tmp_path, label)
    edit_json(root / label / "summary.json", lambda summary: change(summary["protocol"]))
    rehash(root / label)
    assert main(["leaderboard", "--root", str(root)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("metabench: ") and expected in error and error.count("\n") == 1
    assert main(["leaderboard", "check", "--root", str(root)]) == 1
    assert f"FAIL {label}: validation, {expected}" in capsys.readouterr().out


def test_an_unregistered_env_id_is_a_clean_fail(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, MAML)
    fake = "MetaSinusoid-7shot-v0"
    (root / SINE).rename(root / fake)
    entry = root / fake / "maml-seed0-cpu-180s"
    edit_json(entry / "summary.json", lambda summary: summary.update(env_id=fake))
    edit_json(entry / "entry.json", lambda record: record.update(env_id=fake))
    rehash(entry)
    assert main(["leaderboard", "check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {fake}/maml-seed0-cpu-180s: audit (seed " in out and f"env id '{fake}' is not registered" in out
    assert "Traceback" not in out


def test_a_symlinked_entry_file_is_refused_without_printing_its_target(tmp_path: Path, capsys) -> None:
    root = copy_board(tmp_path, MAML)
    (root / MAML / "entry.json").unlink()
    (root / MAML / "entry.json").symlink_to("/etc/passwd")
    assert main(["leaderboard", "check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "entry.json at" in out and "is a symbolic link" in out and "root:" not in out


#: How the re-run differs from the stored episodes in each case: other rounding has no favoured sign; a forgery
#: shifts episodes one way or reshapes most of them.
DIFFERENCES = {
    "noise": lambda i: (0.05 if i % 8 else -0.05) if i % 4 == 0 else 0.0,  # 250 of 1,000, mean 0
    "forged": lambda i: 0.2 if i < 200 else 0.0,  # 200 episodes in the submitter's favour: the mean moves
    "reshaped": lambda i: (0.05 if i % 2 else -0.05) if i % 5 else 0.0,  # 800 of 1,000, mean 0
}


@pytest.mark.parametrize(
    ("hardware", "threads", "differences", "passes"),
    [
        ("other", "recorded", "noise", True),
        ("other", "recorded", "forged", False),
        ("other", "recorded", "reshaped", False),
        ("same", "recorded", "noise", False),
        ("same", "unrecorded", "noise", True),
        ("same", "unrecorded", "forged", False),
    ],
)
def test_on_another_platform_the_re_run_is_judged_as_a_paired_sample(
    tmp_path, monkeypatch, hardware, threads, differences, passes
):
    """On another CPU model than the stored run's, or for an entry that did not record its thread count, episodes
    may differ (an unrolled loop amplifies a last-bit difference) if at least half still reproduce and the mean
    differences are within 3 standard errors of the paired differences; an audit sample that fails escalates to
    every episode. Zero-mean noise passes; 200 episodes shifted one way, or most episodes reshaped, fail after a
    full re-run. On the same hardware at the recorded thread count any mismatch fails the audit."""
    import metabench.evaluation as evaluation

    root = copy_board(tmp_path, PRETRAIN)
    if threads == "recorded":
        edit_json(root / PRETRAIN / "summary.json", lambda summary: summary["run"].update(threads=1))
        rehash(root / PRETRAIN)
    entry = leaderboard.load_entry(root / PRETRAIN)
    assert (entry.summary.run.threads is None) is (threads == "unrecorded")
    stored_name = entry.summary.run.device_name
    monkeypatch.setattr(
        "metabench.envs.common.device_name", lambda device: "Other CPU" if hardware == "other" else stored_name
    )
    real, shift = evaluation.rescore, DIFFERENCES[differences]  # reproduces imports rescore at call time

    def rescore(learner, env_id, episodes, **kwargs):
        return [{**r, "reward": r["reward"] + shift(r["episode"])} for r in real(learner, env_id, episodes, **kwargs)]

    monkeypatch.setattr(evaluation, "rescore", rescore)
    report = leaderboard.check_entry(entry, [], 7)
    assert report.passed is passes, report.message
    if (hardware, threads) == ("same", "recorded"):
        assert report.episodes == 100 and "s.e." in report.message
    elif passes:
        assert "as a paired sample within the other-hardware bounds" in report.message
    else:
        assert report.episodes == 1000 and "s.e." in report.message


def test_the_audit_scores_at_the_evaluations_thread_count(tmp_path, monkeypatch) -> None:
    """An entry evaluated at one thread is re-scored at one thread whatever torch's count here, which is restored
    afterwards; ``evaluate`` records the count it scored at."""
    import metabench.evaluation as evaluation

    root = copy_board(tmp_path, PRETRAIN)
    edit_json(root / PRETRAIN / "summary.json", lambda summary: summary["run"].update(threads=1))
    rehash(root / PRETRAIN)
    seen, real = [], evaluation.score_tasks

    def score_tasks(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "score_tasks", score_tasks)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = leaderboard.check_entry(leaderboard.load_entry(root / PRETRAIN), [], 7)
        assert report.passed, report.message
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        learner = build_learner("pretrain", "MetaSinusoid-5shot-v0")
        summary, _ = evaluation.evaluate(learner, "MetaSinusoid-5shot-v0", n_episodes=3, progress=False)
        assert summary["run"]["threads"] == 2
        assert summary["run"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    finally:
        torch.set_num_threads(previous)
