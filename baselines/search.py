"""Reference black-box searchers for ``metabench search``: random search, regularized evolution,
a REINFORCE-trained LSTM controller and CMA-ES.

Each is an ask/tell :class:`metabench.search.Searcher` over a candidate space (``MultiDiscrete`` for
architectures and augmentation policies, ``Box`` for learning-rate schedules) and maximises reward.

* :class:`RandomSearch` — uniform samples; the baseline every search method must beat.
* :class:`RegularizedEvolution` — E. Real, A. Aggarwal, Y. Huang, Q. Le. Regularized Evolution for
  Image Classifier Architecture Search. AAAI 2019. Tournament selection, one-coordinate mutation,
  the oldest member dies.
* :class:`Reinforce` — B. Zoph, Q. Le. Neural Architecture Search with Reinforcement Learning. ICLR
  2017 (and AutoAugment's controller, Cubuk et al. 2019): an LSTM emits the candidate one
  coordinate at a time, trained with REINFORCE, a moving-average baseline and an entropy bonus.
* :class:`CMAES` — N. Hansen. The CMA Evolution Strategy: A Tutorial. 2016; the ``cma`` package.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from gymnasium import spaces

from metabench import models
from metabench.search import Searcher, Space


def _uniform(space: Space, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(space.nvec).astype(np.int64)
    return rng.uniform(space.low, space.high)


class RandomSearch(Searcher):
    """Candidates drawn uniformly from the space, independently of the rewards."""

    name = "random"
    batch = None  # asks do not wait for rewards: parallel workers stay busy

    def __init__(self, space: Space, seed: int) -> None:
        super().__init__(space, seed)
        self.rng = np.random.default_rng(seed)

    def ask(self) -> np.ndarray:
        return _uniform(self.space, self.rng)

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        pass


class RegularizedEvolution(Searcher):
    """Aging evolution (Real et al. 2019).

    The first ``population`` candidates are uniform; afterwards each candidate is a mutation of the
    best of ``sample`` members drawn from the population, and joining it retires the oldest member.
    A mutation redraws one coordinate: a different value for a discrete one, a Gaussian step of
    ``sigma`` times its range (clipped) for a continuous one.
    """

    name = "evolution"
    batch = None  # asynchronous, as in Real et al.: a new child whenever a worker is free

    def __init__(self, space: Space, seed: int, population: int = 20, sample: int = 5, sigma: float = 0.2) -> None:
        super().__init__(space, seed)
        if not 1 <= sample <= population:
            raise ValueError(f"need 1 <= sample <= population, got sample={sample}, population={population}")
        self.population_size, self.sample, self.sigma = population, sample, sigma
        self.rng = np.random.default_rng(seed)
        self.population: deque[tuple[np.ndarray, float]] = deque()

    def ask(self) -> np.ndarray:
        if len(self.population) < self.population_size:
            return _uniform(self.space, self.rng)
        contenders = self.rng.choice(len(self.population), size=self.sample, replace=False)
        parent = max((self.population[i] for i in contenders), key=lambda member: member[1])[0]
        child = parent.copy()
        i = int(self.rng.integers(child.size))
        if isinstance(self.space, spaces.MultiDiscrete):
            n = int(self.space.nvec[i])
            if n > 1:  # a uniformly drawn *different* value
                child[i] = (child[i] + self.rng.integers(1, n)) % n
        else:
            low, high = self.space.low[i], self.space.high[i]
            child[i] = np.clip(child[i] + self.sigma * (high - low) * self.rng.standard_normal(), low, high)
        return child

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        self.population.append((np.asarray(candidate).copy(), reward))
        if len(self.population) > self.population_size:
            self.population.popleft()


class Reinforce(Searcher):
    """An autoregressive LSTM controller trained with REINFORCE (Zoph & Le 2017).

    Coordinate ``i`` of a candidate is sampled from a softmax over its ``nvec[i]`` values given the
    LSTM state, whose input is the embedding of coordinate ``i - 1`` (a learned start vector for the
    first). After each evaluation the controller takes one Adam step on
    ``-(reward - baseline) / scale * log p(candidate) - entropy * H``: the baseline is an exponential
    moving average of the rewards (decay ``baseline_decay``) and ``scale`` the moving average of
    ``|reward - baseline|``, so the step size does not depend on the reward's units.
    """

    name = "reinforce"

    def __init__(
        self,
        space: Space,
        seed: int,
        hidden: int = 32,
        lr: float = 0.01,
        entropy: float = 0.01,
        baseline_decay: float = 0.8,
        batch: int = 1,
    ) -> None:
        super().__init__(space, seed)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch = batch
        self._losses: list[torch.Tensor] = []
        if not isinstance(space, spaces.MultiDiscrete):
            raise ValueError("reinforce searches discrete candidates (MultiDiscrete); use cmaes or evolution for a Box")
        self.nvec = [int(n) for n in space.nvec]
        self.entropy, self.baseline_decay = entropy, baseline_decay
        with models.seeded(seed):
            self.start = torch.nn.Parameter(torch.zeros(hidden))
            self.embeddings = torch.nn.ModuleList(torch.nn.Embedding(n, hidden) for n in self.nvec)
            self.cell = torch.nn.LSTMCell(hidden, hidden)
            self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in self.nvec)
        parameters = [self.start, *self.embeddings.parameters(), *self.cell.parameters(), *self.heads.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.scale: float | None = None

    def _log_prob_and_entropy(self, candidate: np.ndarray | None) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Sample a candidate (``candidate=None``) or score a given one; returns it, log p and the entropy."""
        state, inputs = None, self.start[None]
        chosen, log_prob, entropy = [], torch.zeros(()), torch.zeros(())
        for i in range(len(self.nvec)):
            state = self.cell(inputs, state)
            logits = self.heads[i](state[0])[0]
            log_probs = torch.log_softmax(logits, dim=0)
            if candidate is None:
                value = int(torch.multinomial(log_probs.exp().detach(), 1, generator=self.generator))
            else:
                value = int(candidate[i])
            chosen.append(value)
            log_prob = log_prob + log_probs[value]
            entropy = entropy - (log_probs.exp() * log_probs).sum()
            inputs = self.embeddings[i](torch.tensor([value]))
        return np.array(chosen, dtype=np.int64), log_prob, entropy

    def ask(self) -> np.ndarray:
        with torch.no_grad():
            return self._log_prob_and_entropy(None)[0]

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        if self.baseline is None:
            self.baseline, self.scale = reward, 0.0
        advantage = reward - self.baseline
        self.scale = self.baseline_decay * self.scale + (1 - self.baseline_decay) * abs(advantage)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        _, log_prob, entropy = self._log_prob_and_entropy(candidate)
        self._losses.append(-(advantage / max(self.scale, 1e-8)) * log_prob - self.entropy * entropy)
        if len(self._losses) == self.batch:
            self.optimizer.zero_grad()
            torch.stack(self._losses).mean().backward()
            self.optimizer.step()
            self._losses = []


class CMAES(Searcher):
    """CMA-ES (the ``cma`` package) over a ``Box``, searching the box rescaled to the unit cube.

    It starts at the centre with step size ``sigma0`` (a fraction of each range) and updates its
    distribution once per generation of ``popsize`` candidates (default: cma's ``4 + 3 ln d``), whose rewards
    it takes in the order it asked for them (its :attr:`batch` is the generation). Its
    answer (:meth:`recommend`) is the distribution's mean, which averages over many noisy
    evaluations, rather than the luckiest single one.
    """

    name = "cmaes"

    def __init__(self, space: Space, seed: int, sigma0: float = 0.25, popsize: int | None = None) -> None:
        import cma

        super().__init__(space, seed)
        if not isinstance(space, spaces.Box):
            raise ValueError("cmaes searches continuous candidates (Box); use evolution or reinforce for discrete ones")
        options = {"seed": seed + 1, "bounds": [0.0, 1.0], "verbose": -9}  # cma treats seed 0 as "unseeded"
        if popsize is not None:
            options["popsize"] = popsize
        self.strategy = cma.CMAEvolutionStrategy(np.full(space.shape[0], 0.5), sigma0, options)
        self.batch = self.strategy.popsize  # one generation: its candidates are evaluated together
        self._generation: list[np.ndarray] = []  # the current generation, in the unit cube
        self._asked = 0
        self._fitness: list[float] = []  # in the order asked: a batch-synchronous searcher is told in that order

    def _scale(self, unit: np.ndarray) -> np.ndarray:
        return self.space.low + unit * (self.space.high - self.space.low)

    def ask(self) -> np.ndarray:
        if self._asked == len(self._generation):
            if len(self._fitness) < len(self._generation):
                raise RuntimeError("cmaes: tell the rewards of a generation before asking for the next")
            self._generation, self._asked, self._fitness = [np.asarray(x) for x in self.strategy.ask()], 0, []
        self._asked += 1
        return self._scale(self._generation[self._asked - 1])

    def tell(self, candidate: np.ndarray, reward: float) -> None:
        if len(self._fitness) == self._asked:
            raise RuntimeError("cmaes: more rewards told than candidates asked")
        self._fitness.append(-reward)  # cma minimises
        if len(self._fitness) == len(self._generation):
            self.strategy.tell(self._generation, self._fitness)

    def recommend(self) -> np.ndarray:
        return self._scale(np.clip(self.strategy.mean, 0.0, 1.0))
