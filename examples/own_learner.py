"""Your own few-shot learner, end to end: write it, train it, evaluate it, put it on a leaderboard.

``PixelProto`` is a tiny Prototypical Network: a linear map of the raw pixels is meta-learned so that a
query lies nearest to the mean embedding (prototype) of its class's support images. The same steps
work for any :class:`metabench.learners.Learner`:

1. **Write** a ``Learner`` subclass: ``name``, ``transductive``, a ``Config`` dataclass (``meta_batch``:
   tasks per training step), ``predict`` (support set -> query logits), ``train_step``, ``state_dict``
   and ``load_state_dict`` (see the ``Learner`` docstring).
2. **Train** it with :func:`metabench.training.train` (``metabench train``): meta-batches of ``train``
   tasks, validation on ``val`` tasks, ``checkpoint.pt``, ``log.csv``, ``curve.png``.
3. **Evaluate** it: :func:`metabench.evaluation.evaluate` scores any learner object;
   ``metabench evaluate`` runs the frozen test protocol on a checkpoint and writes what the leaderboard takes.
4. **Submit** the evaluation with :func:`metabench.leaderboard.submit` (``metabench submit``).

The harness finds your learner by a string, in two ways:

* by **import path** ``"module:Class"``, e.g. ``examples.own_learner:PixelProto`` (this file, run from the
  repository root) or ``mymodule:PixelProto`` for a ``mymodule.py`` in the current folder::

      metabench train mymodule:PixelProto --env MetaOmniglot-5w1s-v1 --iterations 500 --out runs/pixel-proto
      metabench evaluate --agent mymodule:PixelProto --checkpoint runs/pixel-proto/checkpoint.pt \
          --env MetaOmniglot-5w1s-v1

* by **name**, once your package registers the class in the ``metabench.learners`` entry-point group
  (the name must equal the class's ``name``); in your package's ``pyproject.toml``::

      [project.entry-points."metabench.learners"]
      pixel-proto = "mypackage.learners:PixelProto"

  then ``pip install -e .`` and ``metabench train pixel-proto ...``. Only registered learners are re-run
  by ``metabench leaderboard verify``, so an entry on a shared leaderboard needs this form.

Run: ``python -m examples.own_learner`` from the repository root (``--help`` for the options); it works
in a fresh temporary folder unless ``--out`` is given, and submits to ``--root`` (default: inside it),
never to the repository's leaderboard.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from metabench import leaderboard
from metabench.checkpoints import load_checkpoint
from metabench.cli import main as metabench_command
from metabench.episodes import Episodes
from metabench.evaluation import evaluate
from metabench.learners import Learner, available, learner_reference
from metabench.training import train


class PixelProto(Learner):
    """Prototypical Networks on a linear embedding of the pixels (Snell et al. 2017, minus the Conv-4)."""

    name = "pixel-proto"  # how checkpoints, summaries and the leaderboard call it
    transductive = False  # each query is classified on its own, whatever the other queries are

    @dataclasses.dataclass
    class Config:
        meta_batch: int = 4  # training tasks per train_step
        dim: int = 64  # embedding size
        lr: float = 1e-3  # Adam step size

    def __init__(self, config: Config, task: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(config, task, device, seed)  # sets self.config, self.task, self.device, self.seed
        if task["dataset"] != "omniglot":
            raise ValueError("PixelProto classifies images: use a MetaOmniglot env")
        self.embedding = torch.nn.Linear(28 * 28, config.dim)
        generator = torch.Generator().manual_seed(seed)  # the run's seed: the same seed, the same initialisation
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, (28 * 28) ** -0.5, generator=generator)
            self.embedding.bias.zero_()
        self.embedding.to(self.device)
        self.optimizer = torch.optim.Adam(self.embedding.parameters(), lr=config.lr)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(T, n, dim)`` of a batch of tasks' uint8 images ``(T, n, 1, 28, 28)``."""
        return self.embedding(images.flatten(2).float() / 255)

    def logits(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Minus squared distances of the query embeddings to the class prototypes, ``(T, n_query, n_way)``;
        ``labels`` are the support labels ``(T, n)``, in ``0..n_way-1``."""
        one_hot = F.one_hot(labels, int(labels.max()) + 1).float()  # (T, n, n_way)
        prototypes = one_hot.transpose(1, 2) @ self.embed(support) / one_hot.sum(dim=1).unsqueeze(-1)
        return -torch.cdist(self.embed(query), prototypes).square()

    def predict(
        self, support_inputs: torch.Tensor, support_targets: torch.Tensor, query_inputs: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(support_inputs, support_targets, query_inputs)

    def train_step(self, episodes: Episodes) -> dict[str, float]:
        # episodes: config.meta_batch training tasks, with their query labels (never given at test time)
        logits = self.logits(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_targets.flatten())  # the env's query loss
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}  # logged in log.csv

    def state_dict(self) -> dict[str, Any]:
        return {"embedding": self.embedding.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.embedding.load_state_dict(state["embedding"])
        self.optimizer.load_state_dict(state["optimizer"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Train, evaluate and submit PixelProto (see the module docstring).")
    parser.add_argument(
        "--agent",
        default=learner_reference(PixelProto),
        help="how the harness finds the learner: its import path (default: %(default)s) or its registered name",
    )
    parser.add_argument("--env", default="MetaOmniglot-5w1s-v1")
    parser.add_argument("--iterations", type=int, default=100, help="meta-training iterations")
    parser.add_argument("--val-episodes", type=int, default=100, help="val tasks per validation")
    parser.add_argument("--test-episodes", type=int, help="test tasks (default: the whole protocol, 1,000)")
    parser.add_argument("--out", type=Path, help="working folder (default: a new temporary folder)")
    parser.add_argument("--root", type=Path, help="leaderboard folder to submit to (default: OUT/leaderboard)")
    parser.add_argument("--code", default="https://github.com/your-name/pixel-proto", help="your code's URL")
    parser.add_argument("--verify", action="store_true", help="re-run the entry (registered learners only)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="metabench-own-learner-"))
    root = args.root or out / "leaderboard"

    # 2. Train: `metabench train AGENT --env ENV --iterations N --out OUT/run`. The checkpoint records how
    # to find the learner again (its registered name, else its import path: metabench.learners.learner_reference).
    checkpoint = train(
        args.agent,
        args.env,
        out / "run",
        iterations=args.iterations,
        val_interval=max(args.iterations // 2, 1),
        val_episodes=args.val_episodes,
        progress=False,
    )
    print(f"trained: {checkpoint}; learning curve: {out / 'run' / 'log.csv'}")

    # 3a. Evaluate with the Python API: rebuild the learner from its checkpoint and score it on val tasks.
    learner, _ = load_checkpoint(checkpoint)
    val, _ = evaluate(learner, args.env, split="val", n_episodes=args.val_episodes, progress=False)
    print(f"val: accuracy {val['results']['accuracy_mean']:.1%}, reward {val['results']['reward_mean']:.3f}")

    # 3b. The frozen test protocol, as a submission needs it: `metabench evaluate` writes summary.json (with the
    # checkpoint's sha256 and training budget) and episodes.jsonl into OUT/evaluation.
    command = ["evaluate", "--agent", args.agent, "--checkpoint", str(checkpoint), "--env", args.env]
    command += ["--out", str(out / "evaluation")]
    if args.test_episodes is not None:
        command += ["--episodes", str(args.test_episodes)]  # fewer than the protocol's: not a leaderboard score
    if metabench_command(command) != 0:
        raise SystemExit("metabench evaluate failed (see its message above)")
    result: dict[str, Any] = {"checkpoint": checkpoint, "val": val, "evaluation": out / "evaluation"}
    if args.test_episodes is not None:
        return result

    # 4. Submit, like `metabench submit OUT/evaluation --method M --code URL --test-data-for-model-selection no`
    entry = leaderboard.submit(
        out / "evaluation",
        {
            "method": "PixelProto (linear ProtoNet on pixels)",
            "code": args.code,
            "test_data_for_model_selection": False,  # the test split chose nothing: no early stopping on it
            "train_command": f"metabench train {args.agent} --env {args.env} --iterations {args.iterations}",
        },
        root=root,
    )
    print(leaderboard.render_text(leaderboard.load_entries(root), args.env))
    result.update(entry=entry, root=root)
    # Anyone can re-run a registered learner's entry from its stored checkpoint (`metabench leaderboard verify`).
    if args.verify and args.agent in available():
        result["verification"] = leaderboard.verify(entry.path, root)
        print(f"verified: {result['verification'].passed} ({result['verification'].message})")
    elif args.verify:
        print(f"not verified: {args.agent} is not registered (only registered learners are re-run)")
    return result


if __name__ == "__main__":
    main()
