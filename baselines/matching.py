"""Matching Networks.

O. Vinyals, C. Blundell, T. Lillicrap, K. Kavukcuoglu, D. Wierstra. Matching Networks for One Shot
Learning. NeurIPS 2016. A query's label distribution is an attention over the support set,
``P(y | x) = sum_i a(x, x_i) y_i`` with ``a`` the softmax of cosine similarities between embeddings;
the logits are its logarithm. The embedding is the shared Conv-4 of Prototypical Networks (running
batch-norm statistics, so not transductive), trained episodically with Adam on the env's own way and
query count. ``fce=True`` adds the paper's full-context embeddings: the support embeddings read by a
bidirectional LSTM (``g(x_i) = x_i + h_fwd_i + h_bwd_i``), each query's by an LSTM that attends over
them for ``fce_steps`` steps (``h_k = LSTM(f'(x), h_{k-1} + r_{k-1}) + f'(x)``, ``r`` the attention
read-out; the paper concatenates h and r where we add them, to keep one width). A query's prediction
depends on the support set and that query only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metabench import models, nas
from metabench_baselines.protonet import ProtoNet


class MatchingNetwork(ProtoNet):
    """Cosine attention over the support set, with optional full-context embeddings."""

    name = "matching"
    transductive = False
    any_way = True

    @dataclasses.dataclass
    class Config(ProtoNet.Config):
        fce: bool = False
        """Full-context embeddings (a bidirectional LSTM over the support set, an attention LSTM per query)."""
        fce_steps: int = 5
        """Processing steps of the query's attention LSTM."""

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        return {"train_way": task["n_way"], "train_query": task["n_query"]}  # trained on the test episodes' shape

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        self.support_lstm, self.query_lstm = None, None
        if config.fce:
            architecture = nas.conv4(config.width) if config.architecture is None else nas.parse(config.architecture)
            features = architecture[-1].width  # the embedding's width
            with models.seeded(seed):
                self.support_lstm = nn.LSTM(features, features, batch_first=True, bidirectional=True).to(device)
                self.query_lstm = nn.LSTMCell(features, features).to(device)
        super().__init__(config, task, device, seed)

    def trainable(self) -> list[torch.Tensor]:
        modules = [module for module in (self.support_lstm, self.query_lstm) if module is not None]
        return [*super().trainable(), *(param for module in modules for param in module.parameters())]

    def logits(
        self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n_way: int, training: bool
    ) -> torch.Tensor:
        """Log of the attention-weighted support labels: ``(T, n_query, n_way)``."""
        if self.support_lstm is not None:
            support, query = self.full_context(support, query)
        attention = torch.softmax(F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2), dim=-1)
        probabilities = attention @ F.one_hot(labels, n_way).to(attention.dtype)
        return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()

    def full_context(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's g (bidirectional LSTM over the support embeddings) and f (attention LSTM per query)."""
        tasks, n_query, width = query.shape
        both, _ = self.support_lstm(support)  # (T, S, 2 * width)
        support = support + both[..., :width] + both[..., width:]
        flat = query.reshape(tasks * n_query, width)
        hidden, cell, readout = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
        for _ in range(self.config.fce_steps):
            hidden, cell = self.query_lstm(flat, (hidden + readout, cell))
            hidden = hidden + flat
            attention = torch.softmax(hidden.view(tasks, n_query, width) @ support.transpose(1, 2), dim=-1)
            readout = (attention @ support).reshape(tasks * n_query, width)
        return support, hidden.view(tasks, n_query, width)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.support_lstm is not None:
            state["fce"] = {"support": self.support_lstm.state_dict(), "query": self.query_lstm.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.support_lstm is not None:
            self.support_lstm.load_state_dict(state["fce"]["support"])
            self.query_lstm.load_state_dict(state["fce"]["query"])
