"""The episode engine: batches of few-shot tasks sampled by index arithmetic on in-memory tensors.

Every environment, baseline and evaluation in metabench draws its tasks from here, so there is one
definition of what an N-way K-shot task is:

* :class:`OmniglotEpisodes` picks N distinct classes of a split, K support and Q query drawings of
  each, assigns labels ``0..N-1`` in random order and shuffles the support and query sets (so the
  position of a query never reveals its label).
* :class:`SinusoidEpisodes` draws the MAML paper's sinusoid regression tasks.

Randomness always comes from an explicit CPU :class:`torch.Generator`; only the small index tensors
are random, the image gather runs on the data's device. Hence the same seed gives the same tasks bit
for bit on every machine and on CPU and GPU alike.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from functools import cache

import torch

from metabench.data import N_DRAWINGS


@dataclass(frozen=True)
class Episodes:
    """A batch of B tasks; every tensor's first dimension is the task.

    For Omniglot: inputs are uint8 images ``(B, N*K, 1, 28, 28)`` / ``(B, N*Q, 1, 28, 28)``,
    targets int64 labels ``(B, N*K)`` / ``(B, N*Q)``. For the sinusoid: float32 ``(B, K, 1)`` /
    ``(B, Q, 1)`` for both inputs and targets.
    """

    support_inputs: torch.Tensor
    support_targets: torch.Tensor
    query_inputs: torch.Tensor
    query_targets: torch.Tensor

    def __len__(self) -> int:
        return self.support_inputs.shape[0]

    def __getitem__(self, tasks: int | slice | torch.Tensor) -> Episodes:
        """Select tasks, keeping the batch dimension (an int gives a batch of one)."""
        if isinstance(tasks, int):
            tasks = slice(tasks, tasks + 1 if tasks != -1 else None)
        return Episodes(*(getattr(self, f.name)[tasks] for f in fields(self)))


@dataclass(frozen=True)
class EpisodeIndex:
    """Which data a batch of Omniglot tasks is made of: enough to rebuild it exactly.

    ``classes[b, j]`` is the row of the split's class table that gets label ``j`` in task ``b``;
    ``drawings[b, j]`` its K support then Q query drawings; ``support_order`` and ``query_order``
    the permutations applied to the label-sorted support and query sets.
    """

    classes: torch.Tensor
    drawings: torch.Tensor
    support_order: torch.Tensor
    query_order: torch.Tensor

    def __len__(self) -> int:
        return self.classes.shape[0]

    def sha256(self) -> str:
        """Hash of the index tensors (int64, C order): the identity of an episode list."""
        digest = hashlib.sha256()
        for f in fields(self):
            digest.update(getattr(self, f.name).to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()


@cache
def rotations(images: torch.Tensor) -> torch.Tensor:
    """All four quarter-turn rotations of every drawing, ``(characters, 4, 20, 28, 28)``.

    Computed once per data tensor (100 MB for Omniglot) and shared by everything that draws
    rotated classes, so that a rotated class costs a gather.
    """
    return torch.stack([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)], dim=1)


TASK_SAMPLINGS = ("uniform", "within-alphabet")


class OmniglotEpisodes:
    """Samples N-way K-shot tasks with Q queries per class from one split's classes.

    Args:
        images: uint8 tensor ``(characters, 20, 28, 28)`` from :func:`metabench.data.load_omniglot`;
            its device is where episodes are assembled.
        classes: int64 ``(n_classes, 2)`` class table of (character, quarter turns), e.g.
            :func:`metabench.splits.class_table`.
        n_way, k_shot, n_query: task shape; ``k_shot + n_query`` must not exceed 20 drawings.
        groups: with ``task_sampling="within-alphabet"``, the group (alphabet) of every class, int64
            ``(n_classes,)``.
        task_sampling: ``"uniform"``: N distinct classes of the split, uniformly; ``"within-alphabet"``
            (Lake et al. 2015): a group uniformly among those with at least N classes, then N distinct
            classes of it uniformly.
        source: ``(root, preprocessing)`` that :func:`metabench.data.load_omniglot` reads ``images`` from, if
            it does: a pickled sampler (e.g. an env sent to a worker process) then leaves out its image table
            (about 100 MB), and unpickling reads it from the cache of the process that unpickles.
    """

    def __init__(
        self,
        images: torch.Tensor,
        classes: torch.Tensor,
        n_way: int,
        k_shot: int,
        n_query: int,
        groups: torch.Tensor | None = None,
        task_sampling: str = "uniform",
        source: tuple[str | None, str] | None = None,
    ) -> None:
        if min(n_way, k_shot, n_query) < 1:
            raise ValueError(f"n_way, k_shot and n_query must be >= 1, got {n_way}, {k_shot}, {n_query}")
        if k_shot + n_query > N_DRAWINGS:
            raise ValueError(f"k_shot + n_query = {k_shot + n_query} exceeds the {N_DRAWINGS} drawings per character")
        if n_way > len(classes):
            raise ValueError(f"n_way={n_way} exceeds the {len(classes)} classes of the split")
        if task_sampling not in TASK_SAMPLINGS:
            raise ValueError(f"unknown task_sampling {task_sampling!r}; expected one of {TASK_SAMPLINGS}")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.task_sampling = task_sampling
        self.device = images.device
        self.classes = classes.cpu()
        self.source = source
        self._table = rotations(images).flatten(0, 2)  # (characters * 4 rotations * 20 drawings, 28, 28)
        if task_sampling == "within-alphabet":
            if groups is None or groups.shape != (len(classes),):
                raise ValueError("within-alphabet sampling needs the group of every class, shape (n_classes,)")
            self._members = _group_table(groups.cpu(), n_way)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.source is not None:
            del state["_table"]  # read from the data cache again by __setstate__
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_table" not in state:
            from metabench.data import load_omniglot

            root, preprocessing = self.source
            images = load_omniglot(root, self.device, preprocessing=preprocessing)
            self._table = rotations(images).flatten(0, 2)

    def sample_index(self, batch_size: int, generator: torch.Generator) -> EpisodeIndex:
        """Draw the indices of ``batch_size`` tasks from a CPU generator."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        classes = self._distinct_classes(batch_size, generator)
        drawings = torch.rand(batch_size, n, N_DRAWINGS, generator=generator).argsort(dim=2)[..., : k + q]
        support_order = torch.rand(batch_size, n * k, generator=generator).argsort(dim=1)
        query_order = torch.rand(batch_size, n * q, generator=generator).argsort(dim=1)
        return EpisodeIndex(classes, drawings, support_order, query_order)

    def _distinct_classes(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``(B, N)`` classes, distinct within each task, uniform over ordered N-tuples (of one group).

        Rows are drawn with replacement and redrawn whole while they hold a repeat: with N much
        smaller than the number of classes that is rare, and far cheaper than a top-N of scores.
        """
        if self.task_sampling == "within-alphabet":
            members = self._members[torch.randint(len(self._members), (batch_size,), generator=generator)]
            # a random order of each group's members (padding, -1, sorts last), first N taken
            scores = torch.rand(members.shape, generator=generator).masked_fill_(members < 0, 2.0)
            return members.gather(1, scores.argsort(dim=1)[:, : self.n_way])
        n_classes = len(self.classes)
        classes = torch.randint(n_classes, (batch_size, self.n_way), generator=generator)
        while True:
            ordered = classes.sort(dim=1).values
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1).nonzero().flatten()
            if len(repeated) == 0:
                return classes
            classes[repeated] = torch.randint(n_classes, (len(repeated), self.n_way), generator=generator)

    def gather(self, index: EpisodeIndex) -> Episodes:
        """Assemble the tasks an index describes, on the data's device.

        Everything up to the single ``index_select`` is arithmetic on small index tensors.
        """
        n, k, q = self.n_way, self.k_shot, self.n_query
        batch = len(index)
        char_rot = self.classes[index.classes]  # (B, N, 2)
        # row of (character, rotation, drawing) in the flattened (characters * 4 * 20) image table
        rows = (char_rot[..., :1] * 4 + char_rot[..., 1:]) * N_DRAWINGS + index.drawings  # (B, N, K+Q)
        support_rows = rows[..., :k].reshape(batch, n * k).gather(1, index.support_order)
        query_rows = rows[..., k:].reshape(batch, n * q).gather(1, index.query_order)
        labels = torch.arange(n)
        support_labels = labels.repeat_interleave(k)[index.support_order]
        query_labels = labels.repeat_interleave(q)[index.query_order]

        def images(rows: torch.Tensor) -> torch.Tensor:
            flat = self._table.index_select(0, rows.flatten().to(self.device))
            return flat.view(batch, rows.shape[1], 1, *self._table.shape[-2:])

        device = self.device
        return Episodes(images(support_rows), support_labels.to(device), images(query_rows), query_labels.to(device))

    def sample(self, batch_size: int, generator: torch.Generator) -> Episodes:
        """Draw and assemble ``batch_size`` tasks."""
        return self.gather(self.sample_index(batch_size, generator))

    def images(self, classes: torch.Tensor, drawings: torch.Tensor) -> torch.Tensor:
        """Images ``(*shape, 28, 28)`` of drawings ``drawings`` of the split's classes ``classes`` (same shape)."""
        char_rot = self.classes[classes.cpu()]
        rows = (char_rot[..., 0] * 4 + char_rot[..., 1]) * N_DRAWINGS + drawings.cpu()
        return self._table.index_select(0, rows.flatten().to(self.device)).view(*rows.shape, *self._table.shape[-2:])


def _group_table(groups: torch.Tensor, n_way: int) -> torch.Tensor:
    """``(eligible groups, largest group)`` class indices of the groups with at least ``n_way`` classes, -1 padded."""
    members = [torch.nonzero(groups == g).flatten() for g in groups.unique().tolist()]
    eligible = [m for m in members if len(m) >= n_way]
    if not eligible:
        largest = max(len(m) for m in members)
        raise ValueError(f"n_way={n_way} exceeds every alphabet of the split (the largest has {largest} classes)")
    table = torch.full((len(eligible), max(len(m) for m in eligible)), -1, dtype=torch.int64)
    for row, m in enumerate(eligible):
        table[row, : len(m)] = m
    return table


class SinusoidEpisodes:
    """The sinusoid regression tasks of MAML (Finn et al. 2017, section 5.1).

    A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``; support and
    query inputs ``x ~ U[-5, 5]``.
    """

    amplitude = (0.1, 5.0)
    phase = (0.0, math.pi)
    x_range = (-5.0, 5.0)

    def __init__(self, k_shot: int, n_query: int, device: str | torch.device = "cpu") -> None:
        if min(k_shot, n_query) < 1:
            raise ValueError(f"k_shot and n_query must be >= 1, got {k_shot}, {n_query}")
        self.k_shot, self.n_query = k_shot, n_query
        self.device = torch.device(device)

    def sample(self, batch_size: int, generator: torch.Generator) -> Episodes:
        """Draw ``batch_size`` tasks from a CPU generator."""

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=generator)

        amplitude = uniform(*self.amplitude, batch_size, 1, 1)
        phase = uniform(*self.phase, batch_size, 1, 1)
        x = uniform(*self.x_range, batch_size, self.k_shot + self.n_query, 1)
        y = amplitude * torch.sin(x - phase)
        x, y = x.to(self.device), y.to(self.device)
        k = self.k_shot
        return Episodes(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
