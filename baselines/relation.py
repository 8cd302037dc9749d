"""Relation Networks.

F. Sung, Y. Yang, L. Zhang, T. Xiang, P. Torr, T. Hospedales. Learning to Compare: Relation Network
for Few-Shot Learning. CVPR 2018. The embedding keeps its feature maps: four blocks of the shared
Conv-4 (3x3 convolution, batch norm, ReLU), the first two max-pooled, the last two not (7x7 maps of
28x28 images here; the paper's unpadded first convolutions give 5x5). A class is the sum of its support
maps; the learned relation module (two such blocks, each max-pooled, then 64 -> 8 -> 1 with a sigmoid)
scores every (class, query) pair of concatenated maps in [0, 1], trained by mean squared error against
the one-hot labels with Adam 1e-3 halved every 100,000 episodes. The logits handed to the env are the
scores' logarithm. Batch norm keeps running statistics (not transductive). Training episodes have the
test way and the paper's queries per class (19, 15, 10 and 5 for 5w1s, 5w5s, 20w1s and 20w5s).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metabench import models, nas
from metabench_baselines.protonet import ProtoNet

TRAIN_QUERIES = {(5, 1): 19, (5, 5): 15, (20, 1): 10, (20, 5): 5}
"""The paper's queries per class of a training episode, by (way, shot)."""


class RelationNetwork(ProtoNet):
    """A learned relation module on the shared Conv-4's feature maps."""

    name = "relation"
    transductive = False
    any_way = True

    @dataclasses.dataclass
    class Config(ProtoNet.Config):
        architecture: str | None = "conv3x3-64-maxpool,conv3x3-64-maxpool,conv3x3-64-none,conv3x3-64-none"
        lr_halve_every: int = 100_000
        relation_width: int = 64
        """Filters of the relation module's two convolutions."""
        relation_hidden: int = 8
        """Units of its hidden fully connected layer."""

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        return {"train_way": task["n_way"], "train_query": TRAIN_QUERIES.get((task["n_way"], task["k_shot"]), 15)}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        channels, side = nas.shapes(nas.parse(config.architecture))[-1]
        if side // 4 < 1:
            raise ValueError(f"the relation module pools twice: the embedding's {side}x{side} maps are too small")
        width = config.relation_width
        with models.seeded(seed):
            self.relation = nn.Sequential(
                *(
                    layer
                    for in_channels in (2 * channels, width)
                    for layer in (
                        nn.Conv2d(in_channels, width, 3, padding=1),
                        nn.BatchNorm2d(width),
                        nn.ReLU(),
                        nn.MaxPool2d(2),
                    )
                ),
                nn.Flatten(),
                nn.Linear(width * (side // 4) ** 2, config.relation_hidden),
                nn.ReLU(),
                nn.Linear(config.relation_hidden, 1),
                nn.Sigmoid(),
            ).to(device)
        super().__init__(config, task, device, seed)

    def trainable(self) -> list[torch.Tensor]:
        return [*super().trainable(), *self.relation.parameters()]

    def embed(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """Feature maps ``(T, n, C, H, W)`` of images ``(T, n, 1, 28, 28)``, one shared network for all tasks."""
        tasks, n = images.shape[:2]
        flat = images.reshape(1, tasks * n, *images.shape[2:])
        params = models.expand(self.params, 1)
        maps = nas.forward(self.architecture, params, flat, self.running, training, pool=False)
        return maps.reshape(tasks, n, *maps.shape[2:])

    def logits(
        self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n_way: int, training: bool
    ) -> torch.Tensor:
        """Log relation scores of every (query, class) pair: ``(T, n_query, n_way)``."""
        tasks, n_query, *shape = query.shape
        one_hot = F.one_hot(labels, n_way).to(support.dtype)  # (T, S, N)
        classes = (one_hot.transpose(1, 2) @ support.flatten(2)).view(tasks, n_way, *shape)  # summed over shots
        pairs = torch.cat(
            [
                classes[:, None].expand(tasks, n_query, n_way, *shape),
                query[:, :, None].expand(tasks, n_query, n_way, *shape),
            ],
            dim=3,
        )
        self.relation.train(training)
        scores = self.relation(pairs.reshape(-1, 2 * shape[0], *shape[1:])).view(tasks, n_query, n_way)
        return scores.clamp_min(torch.finfo(scores.dtype).tiny).log()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The paper's mean squared error between the scores and the one-hot labels."""
        return F.mse_loss(logits.exp(), F.one_hot(targets, logits.shape[-1]).to(logits.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "relation": self.relation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.relation.load_state_dict(state["relation"])
