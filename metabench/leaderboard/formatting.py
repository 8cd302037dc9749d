"""How the views write numbers: a score with its 95% CI, a duration."""

from __future__ import annotations


def metric_text(value: float, ci: float, accuracy: bool) -> str:
    """``value ± ci``: as percentages for an accuracy, with four decimals for a reward."""
    return f"{100 * value:.2f} ± {100 * ci:.2f} %" if accuracy else f"{value:.4f} ± {ci:.4f}"


def duration(seconds: float) -> str:
    """``seconds`` rounded to whole seconds, as ``S s``, ``M min SS s`` or ``H h MM min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
