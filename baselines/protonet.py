"""Prototypical Networks.

J. Snell, K. Swersky, R. Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.
The meta-learned phi is an embedding (Conv-4 with max-pooling, 64-dimensional output, or any
architecture of ``metabench.nas`` given as ``architecture``, e.g. one found by MetaNAS); a task's
classifier is the nearest class prototype (mean support embedding) in squared Euclidean distance.
Trained on higher-way episodes than tested (60-way, 5 queries per class, as in the paper), Adam
1e-3 halved every 2000 episodes. Batch norm keeps running statistics, so query predictions do not
depend on the other queries (not transductive).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from metabench import models, nas
from metabench.episodes import Episodes
from metabench.learners import Learner


class ProtoNet(Learner):
    """Prototypical Networks on the shared Conv-4 embedding."""

    name = "protonet"
    transductive = False
    any_way = True  # prototypes are built from the support set: one model serves 5-way and 20-way boards

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 1
        train_way: int = 60
        train_query: int = 5
        lr: float = 1e-3
        lr_halve_every: int = 2000
        width: int = 64  # filters of the default Conv-4
        architecture: str | None = None  # a metabench.nas architecture string; None: the Conv-4 of `width`

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        if task["dataset"] != "omniglot":
            raise ValueError("Prototypical Networks classify; they need a classification env such as MetaOmniglot")
        if config.architecture is not None and config.width != ProtoNet.Config.width:
            raise ValueError("width sets the default Conv-4 only; an architecture gives its own widths")
        self.architecture = nas.conv4(config.width) if config.architecture is None else nas.parse(config.architecture)
        params = nas.init(self.architecture, torch.Generator().manual_seed(seed))  # Conv-4: models.conv4_init's
        self.params = {name: value.to(self.device).requires_grad_() for name, value in params.items()}
        self.running = {name: value.to(self.device) for name, value in nas.running_stats(self.architecture).items()}
        self.optimizer = torch.optim.Adam(self.trainable(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_halve_every, gamma=0.5)

    def trainable(self) -> list[torch.Tensor]:
        """What Adam trains: the embedding's parameters (a subclass adds its own modules')."""
        return list(self.params.values())

    def train_env_kwargs(self) -> dict[str, Any]:
        return {"n_way": self.config.train_way, "n_query": self.config.train_query}

    def embed(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """Embeddings ``(T, n, D)`` of images ``(T, n, 1, 28, 28)``, one shared network for all tasks."""
        tasks, n = images.shape[:2]
        flat = images.reshape(1, tasks * n, *images.shape[2:])
        params = models.expand(self.params, 1)
        return nas.forward(self.architecture, params, flat, self.running, training).view(tasks, n, -1)

    def logits(
        self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n_way: int, training: bool
    ) -> torch.Tensor:
        """Minus squared distances of query embeddings to class prototypes: ``(T, n_query, n_way)``."""
        return -torch.cdist(query, models.class_means(support, labels, n_way)).square()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of query logits ``(T, n_query, n_way)``: cross-entropy."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        n_way = int(episodes.support_targets.max()) + 1
        n_support = episodes.support_inputs.shape[1]
        images = torch.cat([episodes.support_inputs, episodes.query_inputs], dim=1)
        embeddings = self.embed(images, training=True)
        support, query = embeddings[:, :n_support], embeddings[:, n_support:]
        loss = self.loss(self.logits(support, episodes.support_targets, query, n_way, True), episodes.query_targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.item()}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            support = self.embed(support_inputs, training=False)
            query = self.embed(query_inputs, training=False)
            return self.logits(support, support_targets, query, self.task["n_way"], False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {name: value.detach() for name, value in self.params.items()},
            "running": dict(self.running),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        models.load_params(self.params, state["params"])
        models.load_params(self.running, state["running"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
