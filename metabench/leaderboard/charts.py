"""The two charts of each board on ``index.html``, drawn by matplotlib as inline SVG.

Verified entries are filled points, unverified ones hollow; each method has a colour (the same in both
charts of a board), and hovering a point shows its numbers. The
SVG is deterministic (a fixed hash salt, no date, no version) so that rebuilding the views from the
same entries gives the same bytes, and its ids are prefixed per chart so that the charts of one page
share none. Text stays text (``svg.fonttype: none``): method names can be selected and searched.
"""

from __future__ import annotations

import html
import io
import math
import re

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, NullFormatter

from metabench.leaderboard.formatting import duration, metric_text
from metabench.leaderboard.schema import Entry

ERROR_BAR = "#333333"
STYLE = {
    "svg.hashsalt": "metabench-leaderboard",
    "svg.fonttype": "none",
    "font.size": 9,
    "font.sans-serif": ["DejaVu Sans"],  # matplotlib's own font: labels are laid out with its metrics
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "grid.color": "#e5e5e5",
}
METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
ID_REFERENCE = re.compile(r'(\bid="|xlink:href="#|url\(#)')


def method_chart(env_id: str, groups: list[list[Entry]], accuracy: bool) -> str:
    """Each entry's mean with its 95% CI as a horizontal error bar; one row per entry, in the table's order."""
    scale = 100.0 if accuracy else 1.0
    label = "accuracy (%)" if accuracy else "reward (minus mean query loss)"
    entries = [entry for group in groups for entry in group]
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.5, 0.7 + 0.3 * len(entries)))
        axes = figure.add_subplot()
        tips = []
        for row, (entry, colour) in enumerate(_coloured(groups)):
            mean, ci = (scale * value for value in entry.score)
            axes.errorbar(mean, row, xerr=ci, fmt="none", ecolor=ERROR_BAR, elinewidth=1.2, capsize=3)
            _point(axes, mean, row, entry, colour, row)
            tips.append(metric_text(*entry.score, accuracy))
        axes.set_yticks(range(len(entries)), [_label(entry, group) for group in groups for entry in group])
        axes.set_ylim(len(entries) - 0.5, -0.5)  # the best on top
        axes.set_xlabel(label)
        axes.grid(axis="x")
        return _svg(figure, "accuracy", env_id, f"{env_id}: {label} with 95% confidence intervals", entries, tips)


def compute_chart(env_id: str, groups: list[list[Entry]], accuracy: bool) -> str:
    """The ranked metric (with its 95% CI) against the meta-training episodes seen (log scale); a key of methods."""
    scale = 100.0 if accuracy else 1.0
    label = "accuracy (%)" if accuracy else "reward"
    entries = [entry for group in groups for entry in group]
    decades = [math.log10(max(entry.record.budget.episodes_seen, 1)) for entry in entries]
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(7.5, 3.3 + 0.18 * len(groups)), layout="constrained")
        axes = figure.add_subplot()
        axes.set_xscale("log")
        axes.set_xlim(10.0 ** math.floor(min(decades) - 0.25), 10.0 ** math.ceil(max(decades) + 0.25))
        axes.xaxis.set_major_formatter(EngFormatter(sep=""))
        axes.xaxis.set_minor_formatter(NullFormatter())
        tips = []
        for index, ((entry, colour), decade) in enumerate(zip(_coloured(groups), decades, strict=True)):
            mean, ci = (scale * value for value in entry.score)
            axes.errorbar(10.0**decade, mean, yerr=ci, fmt="none", ecolor=ERROR_BAR, elinewidth=1.2, capsize=3)
            _point(axes, 10.0**decade, mean, entry, colour, index)
            budget = entry.record.budget
            tips.append(
                f"{metric_text(*entry.score, accuracy)}; {budget.episodes_seen:,} meta-training episodes, "
                f"{duration(budget.wall_seconds)} on {budget.device_name}"
            )
        axes.set_xlabel("meta-training episodes (log scale)")
        axes.set_ylabel(label)
        axes.grid()
        key = [
            Line2D([], [], ls="none", **_marker(colour, all(entry.verified for entry in group)))
            for group, colour in zip(groups, _colours(len(groups)), strict=True)
        ]
        methods = [group[0].record.metadata.method for group in groups]
        figure.legend(handles=key, labels=methods, loc="outside lower left", frameon=False)
        return _svg(figure, "compute", env_id, f"{env_id}: {label} against meta-training episodes", entries, tips)


def _colours(count: int) -> list[tuple[float, ...]]:
    """One colour per method, in rank order (matplotlib's ``tab10``, repeated beyond ten)."""
    palette = matplotlib.colormaps["tab10"].colors
    return [palette[index % len(palette)] for index in range(count)]


def _coloured(groups: list[list[Entry]]) -> list[tuple[Entry, tuple[float, ...]]]:
    """Every entry with the colour of its method."""
    return [(entry, colour) for group, colour in zip(groups, _colours(len(groups)), strict=True) for entry in group]


def _marker(colour: tuple[float, ...], verified: bool) -> dict[str, object]:
    """Line2D keywords of a point: filled when verified, hollow otherwise."""
    return {"marker": "o", "ms": 6, "mew": 1.5, "mec": colour, "mfc": colour if verified else "white"}


def _point(axes: Axes, x: float, y: float, entry: Entry, colour: tuple[float, ...], index: int) -> None:
    """Draw the point of the ``index``-th entry, as the SVG group ``entry-INDEX``."""
    (point,) = axes.plot(x, y, ls="none", zorder=3, **_marker(colour, entry.verified))
    point.set_gid(f"entry-{index}")


def _label(entry: Entry, group: list[Entry]) -> str:
    """The method name, with the training seed where the method has several entries."""
    method = entry.record.metadata.method
    return f"{method} (seed {entry.record.seeds.training})" if len(group) > 1 else method


def _svg(figure: Figure, kind: str, env_id: str, title: str, entries: list[Entry], tips: list[str]) -> str:
    """The figure as an ``<svg class="chart chart-KIND">`` element for an HTML page, each entry's point with its tip."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=METADATA)
    svg = buffer.getvalue()
    svg = re.sub(r"[ \t]+\n", "\n", svg[svg.index("<svg") :])  # no XML prolog inside HTML; no trailing spaces
    prefix = f"{kind}-{env_id}-"

    def prefixed(tag: re.Match[str]) -> str:
        return ID_REFERENCE.sub(lambda match: match.group() + prefix, tag.group())

    svg = re.sub(r"<[^>]*>", prefixed, svg)  # in tags only: ids and references, never the text of labels
    svg = svg.replace(
        "<svg ",
        f'<svg class="chart chart-{kind}" data-env="{html.escape(env_id)}" role="img" '
        f'aria-label="{html.escape(title)}" ',
        1,
    )
    svg = svg.replace(">", f">\n <title>{html.escape(title)}</title>", 1)
    for index, (entry, tip) in enumerate(zip(entries, tips, strict=True)):
        state = "verified" if entry.verified else "unverified"
        text = f"{entry.record.metadata.method}: {tip}"
        svg = svg.replace(
            f'<g id="{prefix}entry-{index}">',
            f'<g id="{prefix}entry-{index}" class="point {state}" data-entry="{html.escape(entry.name)}">'
            f"<title>{html.escape(text)}</title>",
            1,
        )
    return svg
