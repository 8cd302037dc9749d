"""Multi-task pretraining and fine-tuning: the baseline of meta-learning.

No meta-learning at all: one ordinary network is trained on the pooled data of every training task,
then adapted to each test task by gradient descent. This is the "pretrained" baseline of MAML's
sinusoid experiments (C. Finn, P. Abbeel, S. Levine, ICML 2017, section 5.1) and, on Omniglot, the
classifier-pretraining baseline of W.-Y. Chen, Y.-C. Liu, Z. Kira, Y.-C. F. Wang, J.-B. Huang, "A
Closer Look at Few-shot Classification", ICLR 2019 (and G. Dhillon et al., "A Baseline for Few-Shot
Image Classification", ICLR 2020): train a classifier over all the meta-training classes, keep its
body, fit a new linear head on each task's support set.

Omniglot. Training ignores the episodes that :func:`metabench.training.train` hands to
:meth:`Pretrain.train_step` (episodes relabel their classes 0..N-1, so they carry no global class
ids); each call is one Adam step of cross-entropy on ``batch_size`` (class, drawing) pairs drawn
uniformly from the env's training classes (4112 = 1028 characters x 4 rotations on the ``vinyals``
scheme of version 1) by the learner's own seeded generator, which is part of its checkpoint so a
resumed run continues exactly. Hence ``meta_batch`` defaults to 1: the harness's episodes are only
the clock. The network is the max-pool Conv-4 with a head over all training classes and running
batch-norm statistics. At test the body is frozen and used with its running statistics (each image
embedded on its own: not transductive), and a fresh N-way linear head on the support embeddings takes
``finetune_steps`` gradient steps of ``finetune_lr`` on the support loss
(:func:`metabench.inner_loop.adapt`), from zeros (the first step makes it a dot-product
nearest-class-mean classifier) or from the squared-distance nearest-class-mean classifier (weights
2c, biases -|c|^2 for class means c, as in Proto-MAML: Triantafillou et al., ICLR 2020). The
defaults (zeros, 100 steps of 0.03) were chosen on the validation classes with a body pretrained for
1500 steps: the prototype start is as accurate (96.7% vs 96.8%, 5-way 1-shot, 100 episodes) but its logits are far
too confident for the env's reward (query cross-entropy 2.4 vs 0.14), and its support loss is ~0 so
fine-tuning cannot correct them.

Sinusoid. The 1-40-40-1 MLP is trained (Adam) on the mean squared error of every point of the
harness's training tasks (support and query, ``meta_batch`` tasks per step), so it learns roughly
the tasks' mean function E[A sin(x - phase)] = -(2 E[A] / pi) cos x = -1.62 cos x (not 0: phases
are uniform on [0, pi]). At test all its weights take ``finetune_steps`` steps of ``finetune_lr``
on the support loss: 1 step of 0.01 by default, MAML's test-time setting (the MAML paper tuned the
fine-tuning step size of its pretrained baseline automatically).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from metabench import data, models
from metabench.envs import make_env
from metabench.episodes import Episodes
from metabench.inner_loop import adapt
from metabench.learners import Learner, task_losses

HEAD = ("head.weight", "head.bias")


class Pretrain(Learner):
    """A classifier (or regressor) trained on all training tasks at once, fine-tuned per task."""

    name = "pretrain"
    transductive = False

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 1
        """Episodes the harness draws per iteration: only the sinusoid trains on them (see the module)."""
        batch_size: int = 128
        """Omniglot: (class, drawing) pairs per training step."""
        lr: float = 1e-3
        """Adam step size of the pretraining."""
        width: int = 64
        finetune_steps: int = 100
        """Gradient steps of the per-task adaptation at test."""
        finetune_lr: float = 0.03
        """Their step size."""
        head_init: str = "zeros"
        """Omniglot: initial N-way head, ``"prototypes"`` (nearest class mean) or ``"zeros"``."""

    @classmethod
    def defaults(cls, task: dict[str, Any]) -> dict[str, Any]:
        if task["dataset"] == "sinusoid":
            return {"meta_batch": 25, "finetune_steps": 1, "finetune_lr": 0.01}
        return {}

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)
        if config.head_init not in ("prototypes", "zeros"):
            raise ValueError(f"head_init must be 'prototypes' or 'zeros', got {config.head_init!r}")
        generator = torch.Generator().manual_seed(seed)
        self.running: models.Params = {}
        if task["dataset"] == "sinusoid":
            params = models.mlp_init(generator)
        else:
            # the env's own training classes (its split edition and preprocessing)
            train_env = make_env(task["env_id"], split="train", device=self.device, **task.get("env_kwargs", {}))
            self.train_classes = train_env.sampler
            self.generator = torch.Generator().manual_seed(seed + 1)  # draws the training examples
            params = models.conv4_init(len(self.train_classes.classes), generator, width=config.width)
            stats = models.conv4_running_stats(config.width)
            self.running = {name: value.to(self.device) for name, value in stats.items()}
        self.params = {name: value.to(self.device).requires_grad_() for name, value in params.items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.lr)

    def sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` uniform (class, drawing) pairs: images ``(1, B, 1, 28, 28)``, class ids ``(B,)``."""
        size = self.config.batch_size
        classes = torch.randint(len(self.train_classes.classes), (size,), generator=self.generator)
        drawings = torch.randint(data.N_DRAWINGS, (size,), generator=self.generator)
        images = self.train_classes.images(classes, drawings)  # (B, 28, 28)
        return images[None, :, None], classes.to(self.device)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-body embeddings ``(T, n, features)``, batch norm with the running statistics."""
        tasks, n = images.shape[:2]
        body = {name: value.detach() for name, value in self.params.items() if name not in HEAD}
        flat = images.reshape(1, tasks * n, *images.shape[2:])
        return models.conv4(models.expand(body, 1), flat, "maxpool", self.running, training=False).view(tasks, n, -1)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        params = models.expand(self.params, 1)
        if self.task["dataset"] == "sinusoid":
            inputs = torch.cat([episodes.support_inputs, episodes.query_inputs], dim=1).flatten(0, 1)[None]
            targets = torch.cat([episodes.support_targets, episodes.query_targets], dim=1).flatten(0, 1)[None]
            loss = F.mse_loss(models.mlp(params, inputs), targets)
        else:
            images, classes = self.sample_batch()
            logits = models.conv4(params, images, "maxpool", self.running, training=True)
            loss = F.cross_entropy(logits[0], classes)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        steps, lr = self.config.finetune_steps, self.config.finetune_lr
        if self.task["dataset"] == "sinusoid":
            params = {name: value.detach().requires_grad_() for name, value in self.params.items()}

            def regression_loss(p: models.Params) -> torch.Tensor:
                return task_losses(self.task, models.mlp(p, support_inputs), support_targets).sum()

            with torch.enable_grad():
                adapted = adapt(
                    models.expand(params, len(support_inputs)), regression_loss, steps, lr, first_order=True
                )
            with torch.no_grad():
                return models.mlp(adapted, query_inputs)

        with torch.no_grad():
            support, query = self.embed(support_inputs), self.embed(query_inputs)
        return self.finetune_head(support, support_targets, query, self.task["n_way"], steps, lr, self.config.head_init)

    @staticmethod
    def finetune_head(
        support: torch.Tensor,
        labels: torch.Tensor,
        query: torch.Tensor,
        n_way: int,
        steps: int,
        lr: float,
        head_init: str = "zeros",
    ) -> torch.Tensor:
        """Query logits of an N-way linear head fitted on support embeddings ``(T, n, D)``.

        The test-time rule of this baseline, also the base learner of the MetaAugment env: the head
        starts from ``head_init`` and takes ``steps`` gradient steps of ``lr`` on the support loss.
        """
        with torch.no_grad():
            head = Pretrain.initial_head(support, labels, n_way, head_init)

        def classification_loss(p: models.Params) -> torch.Tensor:
            logits = models.linear(p["head.weight"], p["head.bias"], support)
            return (
                F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels).mean(1).sum()
            )

        with torch.enable_grad():
            head = {name: value.requires_grad_() for name, value in head.items()}
            head = adapt(head, classification_loss, steps, lr, first_order=True)
        with torch.no_grad():
            return models.linear(head["head.weight"], head["head.bias"], query)

    @staticmethod
    def initial_head(support: torch.Tensor, labels: torch.Tensor, n_way: int, head_init: str) -> models.Params:
        """The N-way head before fine-tuning: nearest class mean in squared distance, or zeros."""
        prototypes = models.class_means(support, labels, n_way)  # (T, N, features)
        if head_init == "zeros":
            return {
                "head.weight": torch.zeros_like(prototypes),
                "head.bias": prototypes.new_zeros(prototypes.shape[:2]),
            }
        return {"head.weight": 2 * prototypes, "head.bias": -prototypes.square().sum(dim=-1)}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "params": {name: value.detach() for name, value in self.params.items()},
            "running": dict(self.running),
            "optimizer": self.optimizer.state_dict(),
        }
        if self.task["dataset"] != "sinusoid":
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        models.load_params(self.params, state["params"])
        models.load_params(self.running, state["running"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu())
