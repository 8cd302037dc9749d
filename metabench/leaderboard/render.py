"""The generated views: each board's entries ranked and grouped over seeds, as Markdown, plain text and HTML.

Rendering depends only on the stored entries, so the views are deterministic: rebuilding them from the
same entries gives byte-identical files.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import numpy as np

import metabench
from metabench.leaderboard.formatting import duration, metric_text
from metabench.leaderboard.published import PUBLISHED, budget_fraction
from metabench.leaderboard.schema import REPOSITORY_FILE, Entry


def _ranked(entries: list[Entry]) -> dict[str, list[Entry]]:
    """The entries of each board, best first (mean accuracy, else mean reward; ties by submission time)."""
    envs = sorted({entry.env_id for entry in entries}, key=_env_order)
    return {
        env: sorted(
            (entry for entry in entries if entry.env_id == env),
            key=lambda entry: (-entry.score[0], -entry.results.reward_mean, entry.submission_order),
        )
        for env in envs
    }


def seed_groups(env_entries: list[Entry]) -> list[list[Entry]]:
    """One board's entries grouped into the seeds of one submission, best first (ties: the earlier submission).

    A group is the entries that differ by their training seed alone: the same agent, method name, code and paper
    links, training configuration, budget (iterations, meta-batch, hardware), transduction and declared model
    selection, each seed once (a repeated seed starts a group of its own); it ranks by its mean score over seeds.
    """
    groups: dict[tuple, list[Entry]] = {}
    for entry in sorted(env_entries, key=lambda entry: entry.submission_order):
        record, budget = entry.record, entry.record.budget
        key = (
            record.agent,
            record.metadata.method,
            str(record.metadata.code),
            str(record.metadata.paper),
            json.dumps(entry.summary.training.config, sort_keys=True),
            (budget.iterations, budget.meta_batch, budget.device, budget.device_name),
            entry.summary.transductive,
            entry.test_selected,
        )
        copy = 0
        while any(member.record.seeds.training == record.seeds.training for member in groups.get((*key, copy), [])):
            copy += 1
        groups.setdefault((*key, copy), []).append(entry)
    ranked = [sorted(group, key=lambda entry: entry.record.seeds.training) for group in groups.values()]
    return sorted(ranked, key=lambda group: (-_group_score(group)[0], min(e.submission_order for e in group)))


def _group_score(group: list[Entry]) -> tuple[float, float, float]:
    """Mean over seeds of the score, mean of the test-episode CIs, and the across-seed standard deviation."""
    scores = np.array([entry.score[0] for entry in group])
    spread = float(scores.std(ddof=1)) if len(group) > 1 else float("nan")
    return float(scores.mean()), float(np.mean([entry.score[1] for entry in group])), spread


def transduction_applies(env_id: str) -> bool:
    """Whether an agent's predictions can be transductive on this board: only where the agent predicts the
    queries (MetaOmniglot, MetaSinusoid); in the other envs the env's own learner makes the predictions."""
    return env_id.startswith(("MetaOmniglot-", "MetaSinusoid-"))


def board_tables(env_id: str, env_entries: list[Entry]) -> list[tuple[str, list[list[Entry]]]]:
    """A board's tables, each ``(title, seed groups best first)``.

    Verified entries are ranked; where transduction applies and both kinds are present, transductive and
    non-transductive entries are ranked apart. Unverified entries, and entries whose model selection used
    test data, come below in tables of their own and are never ranked with verified ones.
    """
    test_selected = [entry for entry in env_entries if entry.test_selected]
    verified = [entry for entry in env_entries if entry.verified and not entry.test_selected]
    unverified = [entry for entry in env_entries if not entry.verified and not entry.test_selected]
    tables = []
    kinds = {entry.summary.transductive for entry in verified}
    if transduction_applies(env_id) and len(kinds) == 2:
        tables.append(("Verified, non-transductive", seed_groups([e for e in verified if not e.summary.transductive])))
        tables.append(("Verified, transductive", seed_groups([e for e in verified if e.summary.transductive])))
    elif verified:
        tables.append(("Verified", seed_groups(verified)))
    if unverified:
        tables.append(("Unverified (not ranked with verified entries)", seed_groups(unverified)))
    if test_selected:
        tables.append(("Model selection used test data (not ranked)", seed_groups(test_selected)))
    return tables


def protocol_text(env_entries: list[Entry]) -> str:
    """What one score on the board is measured over (episodes x tasks, seed, hash), from a verified entry if any:
    the episode count is that of its stored episodes."""
    entry = next((entry for entry in env_entries if entry.verified), env_entries[0])
    protocol = entry.summary.protocol
    episodes = f"{len(entry.records):,} test episodes"
    if isinstance(protocol.get("tasks_per_step"), int):
        episodes += f" × {protocol['tasks_per_step']} tasks"
    sha = str(protocol.get("episodes_sha256", "?"))[:12]
    return f"{episodes} (seeds {protocol.get('episode_seed', '?')}+i), episodes sha256 {sha}"


def _env_order(env_id: str) -> tuple[int, int, str]:
    """Current ids in registry order, then deprecated ones, then unknown ones."""
    from metabench.envs import DEPRECATED_IDS

    if env_id not in metabench.ENV_IDS:
        return (2, len(metabench.ENV_IDS), env_id)
    return (int(env_id in DEPRECATED_IDS), metabench.ENV_IDS.index(env_id), "")


def _row(rank: int, group: list[Entry]) -> dict[str, str]:
    """A table row for one entry, or for the seeds of one method (mean over seeds, across-seed s.d.)."""
    entry = group[0]
    results = entry.results
    budget = entry.record.budget
    accuracy = results.accuracy_mean is not None
    mean, ci, spread = _group_score(group)
    flags = []
    if entry.summary.transductive and transduction_applies(entry.env_id):
        flags.append("transductive")
    if any(member.test_selected for member in group):
        flags.append("test-selected")
    verified = sum(member.verified for member in group)
    flags.append(
        "verified" if verified == len(group) else "unverified" if not verified else f"{verified}/{len(group)} verified"
    )
    if any(member.problems for member in group):
        flags.append("modified")
    seeds = ", ".join(str(member.record.seeds.training) for member in group)
    if len(group) > 1:
        unit = " %" if accuracy else ""
        seeds += f" (s.d. {100 * spread:.2f}{unit})" if accuracy else f" (s.d. {spread:.4f})"
    published = PUBLISHED.get((entry.env_id, entry.record.agent))
    published_text = "—"
    if published is not None:
        fraction = budget_fraction(published, budget.episodes_seen)
        share = published.budget if fraction is None else f"this budget is {100 * fraction:.2g}% of it"
        published_text = f"{published.text()} % ({share})"
    reward = np.mean([member.results.reward_mean for member in group])
    reward_ci = np.mean([member.results.reward_ci95 for member in group])
    return {
        "rank": str(rank),
        "method": entry.record.metadata.method,
        "entry": ", ".join(member.name for member in group),
        "accuracy": metric_text(mean, ci, True) if accuracy else "—",
        "reward": metric_text(float(reward), float(reward_ci), False),
        "seeds": seeds,
        "budget": f"{budget.iterations:,} it × {budget.meta_batch} = {budget.episodes_seen:,} episodes, "
        f"{duration(budget.wall_seconds)}" + (" (seed 0's)" if len(group) > 1 else ""),
        "hardware": f"{budget.device_name} ({budget.device})",
        "published": published_text,
        "flags": ", ".join(flags),
        "paper": str(entry.record.metadata.paper or ""),
        "code": _link(entry.record.metadata.code),
    }


def _link(code: Any) -> str:
    """The code link as seen from the leaderboard folder (repository files are relative links)."""
    text = str(code)
    return f"../{text}" if REPOSITORY_FILE.match(text) else text


COLUMNS = ("rank", "method", "accuracy", "reward", "seeds", "budget", "hardware", "published", "flags")
HEADERS = {
    "rank": "#",
    "method": "method",
    "accuracy": "accuracy (95% CI)",
    "reward": "reward (95% CI)",
    "seeds": "training seeds",
    "budget": "training budget",
    "hardware": "training hardware",
    "published": "published (paper)",
    "flags": "flags",
    "links": "links",
}


def _md(text: str) -> str:
    """``text`` with Markdown's special characters escaped."""
    return re.sub(r"([\\`*_\[\]|<>&])", r"\\\1", text)


def render_markdown(entries: list[Entry]) -> str:
    """``leaderboard/README.md``: each environment's tables (see :func:`board_tables`)."""
    ranked = _ranked(entries)
    lines = [
        "# Leaderboard",
        "",
        "Generated by `metabench leaderboard` from the entries in this folder: do not edit by hand.",
        "Every entry was validated by `metabench submit` (schema, registered protocol hashes, the protocol's",
        "test episodes recomputed into the summary). **verified**: a full re-run of the stored checkpoint",
        "(`metabench leaderboard verify`) reproduced every episode, and on every change CI validates it again and",
        "re-scores a fresh random sample of its episodes (`metabench leaderboard check`). Unverified entries are",
        "listed below the ranking, never in it. Ranked by mean accuracy (regression: mean reward) computed from the",
        "stored episodes, ties by submission time; 95% CI = 1.96 standard errors over the test episodes; a row",
        "groups the training seeds of one submission (mean over seeds, across-seed s.d.). **transductive**",
        "(few-shot boards only): query predictions use statistics of the whole query set; such entries are",
        "ranked apart. Charts: [index.html](index.html). What verified guarantees, and how to submit:",
        "[Submitting to the leaderboard](../README.md#submitting-to-the-leaderboard).",
        "",
    ]
    for env_id in sorted(set(metabench.ENV_IDS) | set(ranked), key=_env_order):
        lines += [f"## {env_id}", ""]
        env_entries = ranked.get(env_id, [])
        if not env_entries:
            lines += ["No entries yet.", ""]
            continue
        lines += [f"Protocol: {protocol_text(env_entries)}.", ""]
        sources = dict.fromkeys(record for (board, _), record in PUBLISHED.items() if board == env_id)
        for record in {record.source: record for record in sources}.values():
            lines += [f"Published ({record.source}): measured on {record.protocol}; ± = {record.plus_minus_means}.", ""]
        for title, groups in board_tables(env_id, env_entries):
            lines += [f"**{title}**", ""]
            lines.append("| " + " | ".join(HEADERS[column] for column in (*COLUMNS, "links")) + " |")
            lines.append("|" + "---|" * (len(COLUMNS) + 1))
            for rank, group in enumerate(groups, start=1):
                row = _row(rank, group)
                cells = [_md(row[column]) for column in COLUMNS]
                cells[1] = f"{cells[1]}<br>`{row['entry']}`"
                links = [f"[code](<{row['code']}>)"] + ([f"[paper](<{row['paper']}>)"] if row["paper"] else [])
                lines.append("| " + " | ".join([*cells, " ".join(links)]) + " |")
            lines.append("")
    return "\n".join(lines)


def render_text(entries: list[Entry], env_id: str | None = None) -> str:
    """The ranked tables as aligned plain text, for the terminal."""
    ranked = _ranked(entries)
    envs = [env_id] if env_id is not None else list(ranked)
    blocks = []
    columns = ("rank", "method", "entry", "accuracy", "reward", "seeds", "budget", "hardware", "flags")
    for env in envs:
        env_entries = ranked.get(env, [])
        if not env_entries:
            blocks.append(f"{env}: no entries yet")
            continue
        parts = [f"{env} ({protocol_text(env_entries)})"]
        for title, groups in board_tables(env, env_entries):
            rows = [_row(rank, group) for rank, group in enumerate(groups, start=1)]
            table = [[HEADERS.get(c, c) for c in columns]] + [[row[c] for c in columns] for row in rows]
            widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
            text = "\n".join(
                "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                for line in table
            )
            parts.append(f"{title}:\n{text}")
        blocks.append("\n".join(parts))
    return "\n\n".join(blocks) if blocks else "the leaderboard has no entries yet"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table.leaderboard { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }
table.leaderboard td.num { text-align: right; white-space: nowrap; }
code { font-size: 12px; color: #555; }
.flag { font-size: 12px; padding: 1px 5px; border-radius: 3px; margin-right: 3px; }
.flag-verified { background: #d7f0d8; } .flag-unverified { background: #f7e1c4; }
.flag-transductive { background: #dde6f7; } .flag-modified { background: #f4b4b4; }
.flag-test-selected { background: #f4b4b4; }
svg.chart { display: block; margin: 0.5em 0 1.5em; max-width: 100%; height: auto; }
""".strip()


def render_html(entries: list[Entry]) -> str:
    """``leaderboard/index.html``: self-contained page with each environment's table and charts (inline SVG)."""
    from metabench.leaderboard.charts import compute_chart, method_chart  # loads matplotlib: only here

    ranked = _ranked(entries)
    body = [
        "<h1>metabench leaderboard</h1>",
        "<p>Generated by <code>metabench leaderboard</code>. Ranked by mean accuracy over each board's protocol "
        "test episodes (regression: mean reward), with 95% confidence intervals (1.96 standard errors); a method's "
        "training seeds are grouped. Verified entries (a full re-run reproduced every episode; CI re-scores a "
        "fresh random sample on every change) are ranked; unverified ones are listed apart. Filled points are verified "
        "entries, hollow points unverified.</p>",
    ]
    for env_id in sorted(set(metabench.ENV_IDS) | set(ranked), key=_env_order):
        env_entries = ranked.get(env_id, [])
        body.append(f'<section id="{html.escape(env_id)}" class="env"><h2>{html.escape(env_id)}</h2>')
        if not env_entries:
            body.append('<p class="empty">No entries yet.</p></section>')
            continue
        accuracy = env_entries[0].results.accuracy_mean is not None
        body.append(f'<p class="protocol">Protocol: {html.escape(protocol_text(env_entries))}.</p>')
        for title, table_groups in board_tables(env_id, env_entries):
            body.append(f"<h3>{html.escape(title)}</h3>")
            body.append(_html_table(table_groups))
        groups = seed_groups(env_entries)
        metric = "Accuracy" if accuracy else "Reward"
        body.append(f"<h3>{metric} per method (95% CI)</h3>")
        body.append(method_chart(env_id, groups, accuracy))
        body.append(f"<h3>{metric} against training compute</h3>")
        body.append(compute_chart(env_id, groups, accuracy))
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>metabench leaderboard</title>\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _html_table(groups: list[list[Entry]]) -> str:
    """One ranked table of seed groups as HTML."""
    parts = ['<table class="leaderboard"><thead><tr>']
    parts.append("".join(f"<th>{html.escape(HEADERS[c])}</th>" for c in (*COLUMNS, "links")))
    parts.append("</tr></thead><tbody>")
    for rank, group in enumerate(groups, start=1):
        row = _row(rank, group)
        flags = "".join(f'<span class="flag flag-{flag}">{flag}</span>' for flag in row["flags"].split(", ") if flag)
        links = f'<a href="{html.escape(row["code"])}" rel="nofollow">code</a>'
        if row["paper"]:
            links += f' <a href="{html.escape(row["paper"])}" rel="nofollow">paper</a>'
        parts.append(
            f'<tr class="entry" data-entry="{html.escape(row["entry"])}"><td class="num">{rank}</td>'
            f"<td>{html.escape(row['method'])}<br><code>{html.escape(row['entry'])}</code></td>"
            f'<td class="num">{html.escape(row["accuracy"])}</td><td class="num">{html.escape(row["reward"])}</td>'
            f"<td>{html.escape(row['seeds'])}</td>"
            f"<td>{html.escape(row['budget'])}</td><td>{html.escape(row['hardware'])}</td>"
            f"<td>{html.escape(row['published'])}</td><td>{flags}</td><td>{links}</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def render_views(entries: list[Entry]) -> dict[str, bytes]:
    """The generated files of the leaderboard root, by name."""
    return {"README.md": render_markdown(entries).encode(), "index.html": render_html(entries).encode()}
