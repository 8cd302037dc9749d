"""The published figures that the Omniglot boards are read against, with what each was measured on.

One record per (board, agent): the paper's test accuracy, what its "+-" means, the protocol behind it
(which differs from the board's for MAML and Reptile, so a gap is not only a gap of budget), and the
training budget it took, in meta-iterations x tasks per iteration, so an entry's budget can be given as
a fraction of it (:func:`budget_fraction`). The README's results table, ``benchmarks/table_v1.py`` and
``reproductions/status.py`` read them here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """A published test accuracy (percent) and the conditions it was measured under."""

    accuracy: float
    plus_minus: float | None
    plus_minus_means: str
    protocol: str
    source: str
    iterations: int | None = None
    """Meta-iterations of the published run (None: no fixed budget, see ``budget``)."""
    tasks_per_iteration: int | None = None
    budget: str = ""
    """The published run's length in words."""

    @property
    def episodes(self) -> int | None:
        """Training tasks (episodes) of the published run."""
        if self.iterations is None or self.tasks_per_iteration is None:
            return None
        return self.iterations * self.tasks_per_iteration

    def text(self) -> str:
        """E.g. ``98.7 ± 0.4``."""
        return f"{self.accuracy:g}" + ("" if self.plus_minus is None else f" ± {self.plus_minus:g}")


PROTONETS = "Snell et al. 2017, table 1"
PROTONETS_PROTOCOL = "the Vinyals split with rotations (this v1 protocol), 1,000 test episodes, 60-way training"
PROTONETS_BUDGET = "early stopping: 200 validations of 100 episodes without a lower val loss"
MAML = "Finn et al. 2017, table 1"
MAML_PROTOCOL = "a random 1,100 / 100 / 423 character split, one random rotation per class, 600 test tasks"
MAML_MEANS = "95% confidence interval over the test tasks"
REPTILE = "Nichol et al. 2018, table 1 (non-transductive)"
REPTILE_PROTOCOL = "its own random character split, test characters unrotated, test tasks of 1 query per class"
REPTILE_MEANS = "as reported; the paper does not say over what"
MATCHING = "Vinyals et al. 2016, table 1 (no fine-tuning)"
MATCHING_PROTOCOL = "the Vinyals split (1,200 training and 423 test characters, rotations as classes)"
RELATION = "Sung et al. 2018, table 1"
RELATION_MEANS = "95% confidence interval over the test episodes"
ANIL = "Raghu et al. 2020, table 2"
ANIL_MEANS = "as reported (over training runs)"

PUBLISHED: dict[tuple[str, str], Published] = {
    **{
        (f"MetaOmniglot-{cell}-v1", "protonet"): Published(
            accuracy, None, "not reported", PROTONETS_PROTOCOL, PROTONETS, budget=PROTONETS_BUDGET
        )
        for cell, accuracy in (("5w1s", 98.8), ("5w5s", 99.7), ("20w1s", 96.0), ("20w5s", 98.9))
    },
    **{
        (f"MetaOmniglot-{cell}-v1", agent): Published(
            accuracy,
            plus_minus,
            MAML_MEANS,
            MAML_PROTOCOL,
            MAML,
            60_000,
            32 if cell.startswith("5w") else 16,
            "60,000 meta-iterations x 32 tasks (5-way) or 16 (20-way)",
        )
        for agent, figures in (
            ("maml", (("5w1s", 98.7, 0.4), ("5w5s", 99.9, 0.1), ("20w1s", 95.8, 0.3), ("20w5s", 98.9, 0.2))),
            ("fomaml", (("5w1s", 98.3, 0.5), ("5w5s", 99.2, 0.2), ("20w1s", 89.4, 0.5), ("20w5s", 97.9, 0.1))),
        )
        for cell, accuracy, plus_minus in figures
    },
    **{
        (f"MetaOmniglot-{cell}-v1", "reptile"): Published(
            accuracy,
            plus_minus,
            REPTILE_MEANS,
            REPTILE_PROTOCOL,
            REPTILE,
            100_000,
            5,
            "100,000 meta-iterations x 5 tasks",
        )
        for cell, accuracy, plus_minus in (
            ("5w1s", 95.39, 0.09),
            ("5w5s", 98.90, 0.10),
            ("20w1s", 88.14, 0.15),
            ("20w5s", 96.65, 0.33),
        )
    },
    **{
        (f"MetaOmniglot-{cell}-v1", "matching"): Published(
            accuracy, None, "not reported", MATCHING_PROTOCOL, MATCHING, budget="not stated"
        )
        for cell, accuracy in (("5w1s", 98.1), ("5w5s", 98.9), ("20w1s", 93.8), ("20w5s", 98.5))
    },
    **{
        (f"MetaOmniglot-{cell}-v1", "relation"): Published(
            accuracy, plus_minus, RELATION_MEANS, MATCHING_PROTOCOL, RELATION, budget="not stated"
        )
        for cell, accuracy, plus_minus in (
            ("5w1s", 99.6, 0.2),
            ("5w5s", 99.8, 0.1),
            ("20w1s", 97.6, 0.2),
            ("20w5s", 99.1, 0.1),
        )
    },
    **{
        (f"MetaOmniglot-{cell}-v1", "anil"): Published(
            accuracy, plus_minus, ANIL_MEANS, MAML_PROTOCOL, ANIL, budget="MAML's recipe; its length is not stated"
        )
        for cell, accuracy, plus_minus in (("20w1s", 96.2, 0.5), ("20w5s", 98.0, 0.3))
    },
}


def budget_fraction(published: Published, episodes: int) -> float | None:
    """The fraction of the published run's training tasks that ``episodes`` is (None: no fixed budget)."""
    return None if published.episodes is None else episodes / published.episodes
