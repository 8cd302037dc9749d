"""The ANIL, Reptile and pretraining baselines: they learn, they follow the gym contract, they resume exactly.

Learning is checked on small configurations (width 32, short runs, few validation episodes) that run
in seconds on a CPU; each run is compared with the same learner untrained on the same episodes.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from metabench import data, models, splits
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs import make_env
from metabench.evaluation import evaluate
from metabench.training import TRAIN_SEED_OFFSET, train
from metabench_baselines.anil import ANIL
from metabench_baselines.pretrain import Pretrain
from metabench_baselines.reptile import Reptile

OMNIGLOT = "MetaOmniglot-5w1s-v0"
SINUSOID = "MetaSinusoid-5shot-v0"

#: Small, fast configurations (not the protocol's), and meta-training lengths that learn with them.
SMALL = {
    "anil": {"meta_batch": 4, "width": 32},
    "reptile": {"width": 32, "inner_steps_test": 10, "inner_lr": 0.003},
    "pretrain": {"width": 32, "lr": 3e-3},
}
ITERATIONS = {"anil": 50, "reptile": 80, "pretrain": 150}
VAL_EPISODES = 50


def small(name: str, env_id: str = OMNIGLOT, **changes) -> dict:
    """The small configuration of learner ``name`` on ``env_id`` (defaults on the cheap sinusoid)."""
    return {**(SMALL[name] if env_id == OMNIGLOT else {}), **changes}


def val_accuracy(learner, env_id: str = OMNIGLOT) -> float:
    summary, _ = evaluate(learner, env_id, split="val", n_episodes=VAL_EPISODES, seed=1, progress=False)
    return summary["results"]["accuracy_mean"]


def val_mse(learner, n_episodes: int = 200) -> float:
    summary, _ = evaluate(learner, SINUSOID, split="val", n_episodes=n_episodes, seed=1, progress=False)
    return -summary["results"]["reward_mean"]


def val_episodes(env_id: str = OMNIGLOT, tasks: int = 3):
    return make_env(env_id, split="val").sampler.sample(tasks, torch.Generator().manual_seed(5))


def predictions(learner, episodes) -> torch.Tensor:
    with torch.no_grad():
        return learner.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)


@pytest.mark.parametrize("name", ["anil", "reptile", "pretrain"])
def test_meta_training_beats_the_untrained_learner_on_omniglot(name, tmp_path):
    untrained = val_accuracy(build_learner(name, OMNIGLOT, SMALL[name]))
    path = train(
        name,
        OMNIGLOT,
        tmp_path,
        iterations=ITERATIONS[name],
        config=SMALL[name],
        val_interval=ITERATIONS[name],
        val_episodes=VAL_EPISODES,
        progress=False,
    )
    trained = load_checkpoint(path)[1]["history"][-1]["val_accuracy"]
    print(f"{name}: val accuracy {untrained:.3f} untrained, {trained:.3f} after {ITERATIONS[name]} iterations")
    assert trained > 0.45  # chance is 0.2
    assert trained > untrained + 0.2


def test_maml_adapts_better_than_the_pretrained_baseline_on_sinusoids(tmp_path):
    """The MAML paper's figure 2 in miniature: query MSE after one gradient step on 5 support points."""
    runs = {"maml": (200, {"outer_lr": 1e-2}), "pretrain": (1000, {})}  # pretraining has converged by then
    mse = {}
    for name, (iterations, config) in runs.items():
        path = train(
            name,
            SINUSOID,
            tmp_path / name,
            iterations=iterations,
            config=config,
            val_interval=iterations,
            progress=False,
        )
        learner, _ = load_checkpoint(path)
        assert (learner.config.inner_steps_test if name == "maml" else learner.config.finetune_steps) == 1
        mse[name] = val_mse(learner)
    print(f"query MSE after one step: {mse}")
    assert mse["maml"] < 0.75 * mse["pretrain"]


def test_pretrained_sinusoid_model_learns_the_mean_function(tmp_path):
    """Trained on every task's points at once, the MLP fits E[A sin(x - phase)] = -(2 E[A] / pi) cos x."""
    path = train("pretrain", SINUSOID, tmp_path, iterations=1000, val_interval=1000, progress=False)
    learner, _ = load_checkpoint(path)
    x = torch.linspace(-5, 5, 101).view(1, -1, 1)
    with torch.no_grad():
        fitted = models.mlp(models.expand(learner.params, 1), x)
    mean_function = -(2 * 2.55 / math.pi) * torch.cos(x)  # E[A] = 2.55 for A ~ U[0.1, 5], phase ~ U[0, pi]
    error = (fitted - mean_function).abs().mean().item()
    print(f"mean |f(x) - E[y|x]| = {error:.3f} (|E[y|x]| is up to 1.62)")
    assert error < 0.4


@pytest.mark.parametrize(
    ("name", "env_id"),
    [("anil", OMNIGLOT), ("anil", SINUSOID), ("reptile", OMNIGLOT), ("pretrain", OMNIGLOT), ("pretrain", SINUSOID)],
)
def test_act_answers_a_real_observation_with_the_action_shape(name, env_id):
    config = small(name, env_id, **({"inner_steps_test": 2} if name == "reptile" else {}))
    learner = build_learner(name, env_id, config)
    env = gym.make(env_id)
    observation, _ = env.reset(seed=0)
    action = learner.act(observation)
    assert action.shape == env.action_space.shape and action.dtype == np.float32
    _, reward, terminated, _, _ = env.step(action)
    assert terminated and np.isfinite(reward)

    vector_env = gym.make_vec(env_id, num_envs=3)
    observations, _ = vector_env.reset(seed=0)
    actions = learner.act(observations)
    assert actions.shape == vector_env.action_space.shape
    assert np.allclose(actions[0], learner.act({key: value[0] for key, value in observations.items()}), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "env_id"), [("anil", OMNIGLOT), ("reptile", OMNIGLOT), ("pretrain", OMNIGLOT), ("pretrain", SINUSOID)]
)
def test_checkpoints_hold_the_learner_and_resume_exactly(name, env_id, tmp_path):
    config = small(name, env_id, **({"inner_steps_test": 3} if name == "reptile" else {}))
    reference = build_learner(name, env_id, config)
    sampler = make_env(env_id, split="train", **reference.train_env_kwargs()).sampler
    generator = torch.Generator().manual_seed(TRAIN_SEED_OFFSET)  # the sampler seed of train(..., seed=0)
    episodes = val_episodes(env_id)

    def run(iterations: int) -> torch.Tensor:
        path = train(name, env_id, tmp_path, iterations=iterations, config=config, val_episodes=3, progress=False)
        learner, checkpoint = load_checkpoint(path)
        assert checkpoint["iteration"] == iterations
        return predictions(learner, episodes)

    def step(progress: float) -> None:
        reference.progress = progress  # what train() sets: iteration / iterations of the call (Reptile anneals by it)
        reference.train_step(sampler.sample(reference.config.meta_batch, generator))

    untrained = predictions(reference, episodes)
    for progress in (0 / 2, 1 / 2):
        step(progress)
    assert torch.equal(run(2), predictions(reference, episodes))
    assert not torch.equal(untrained, predictions(reference, episodes))
    for progress in (2 / 4, 3 / 4):
        step(progress)
    assert torch.equal(run(4), predictions(reference, episodes))  # resumed from iteration 2


def test_anil_adapts_the_head_only_and_its_meta_gradient_is_second_order():
    learner = build_learner("anil", OMNIGLOT, SMALL["anil"])
    assert isinstance(learner, ANIL)
    episodes = val_episodes()
    adapted = learner.adapt(episodes.support_inputs, episodes.support_targets, steps=2, first_order=False)
    for name, value in learner.params.items():
        changed = not torch.equal(adapted[name], value.expand_as(adapted[name]))
        assert changed == name.startswith("head."), name

    def body_gradient(first_order: bool) -> torch.Tensor:
        adapted = learner.adapt(episodes.support_inputs, episodes.support_targets, 1, first_order)
        logits = learner.forward(adapted, episodes.query_inputs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), episodes.query_targets.flatten())
        return torch.autograd.grad(loss, learner.params["conv0.weight"])[0]

    assert not torch.allclose(body_gradient(first_order=False), body_gradient(first_order=True))


def test_reptile_outer_step_is_annealed_and_interpolates_towards_the_adapted_weights():
    learner = build_learner("reptile", OMNIGLOT, {"width": 32, "meta_batch": 1})
    assert isinstance(learner, Reptile) and not learner.transductive
    sampler = make_env(OMNIGLOT, split="train", **learner.train_env_kwargs()).sampler
    episodes = sampler.sample(1, torch.Generator().manual_seed(0))
    assert episodes.support_inputs.shape[1] + episodes.query_inputs.shape[1] == 5 * 10  # the paper's train shots
    theta = {name: value.clone() for name, value in learner.params.items()}
    adam = learner.state_dict()["inner_adam"]  # a copy
    inputs = torch.cat([episodes.support_inputs[0], episodes.query_inputs[0]])
    targets = torch.cat([episodes.support_targets[0], episodes.query_targets[0]])
    config = learner.config
    phi, _ = learner.finetune(
        inputs, targets, config.inner_steps, config.inner_batch, None, learner.state_dict()["inner_adam"]
    )

    assert learner.progress == 0.0  # before any training harness has set it
    steps = []
    for progress in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5):
        learner.progress = progress
        steps.append(learner.train_step(episodes)["outer_step"])
    assert steps == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])  # linear in the run's progress, 0 after it
    assert set(learner.state_dict()) == {"params", "inner_adam"}  # the schedule is the harness's, not a checkpoint's
    assert int(learner.state_dict()["inner_adam"]["step"]) == 6 * config.inner_steps  # Adam's moments carry over
    learner.load_state_dict({"params": theta, "inner_adam": adam})
    learner.progress = 0.0
    learner.train_step(episodes)  # eps = 1 and one task: theta becomes that task's phi
    for name, value in learner.params.items():
        assert torch.allclose(value, phi[name][0], atol=1e-6), name


def test_reptile_before_the_paper_recipe_loads_its_checkpoints_as_they_were(tmp_path):
    """A checkpoint whose config lacks the fields added for the paper's recipe (inner_optimizer, train_shots,
    batch_norm) loads with the values they stood for then (SGD, the env's episodes, running statistics)."""
    old = {"width": 16, "inner_lr": 0.1, "downsample": "maxpool", **Reptile.legacy_config}
    path = train("reptile", OMNIGLOT, tmp_path, iterations=1, config=old, val_episodes=2, progress=False)
    checkpoint = torch.load(path, weights_only=True)
    for key in Reptile.legacy_config:
        del checkpoint["config"][key]
    torch.save(checkpoint, path)
    learner, _ = load_checkpoint(path)
    assert (learner.config.inner_optimizer, learner.config.train_shots, learner.config.batch_norm) == (
        "sgd",
        0,
        "running",
    )
    assert set(learner.state_dict()) == {"params", "running"} and learner.train_env_kwargs() == {}


def test_training_sets_the_progress_of_the_planned_run_before_every_step(monkeypatch, tmp_path):
    """train() sets learner.progress = iteration / iterations (or elapsed / time budget), and Reptile's eps follows."""
    seen: list[tuple[float, float]] = []
    original = Reptile.train_step

    def spy(self, episodes):
        metrics = original(self, episodes)
        seen.append((self.progress, metrics["outer_step"]))
        return metrics

    monkeypatch.setattr(Reptile, "train_step", spy)
    config = {"width": 16, "meta_batch": 1, "inner_steps": 1, "inner_steps_test": 1}

    def run(out, iterations, **kwargs) -> np.ndarray:
        """(progress, eps) of every step of one train() call."""
        seen.clear()
        train("reptile", OMNIGLOT, out, iterations=iterations, config=config, val_episodes=2, progress=False, **kwargs)
        return np.array(seen)

    quarters = [(0, 1), (0.25, 0.75), (0.5, 0.5), (0.75, 0.25)]
    np.testing.assert_allclose(run(tmp_path / "a", 4), quarters)
    # a resumed run anneals over the rest of its (longer) plan, from where it is
    np.testing.assert_allclose(run(tmp_path / "a", 6), [(4 / 6, 2 / 6), (5 / 6, 1 / 6)])

    # with a time budget that ends before the iterations do, progress is the budget's fraction spent
    clock = iter(range(1000))
    monkeypatch.setattr(
        "metabench.training.time", SimpleNamespace(perf_counter=lambda: float(next(clock)), process_time=lambda: 0.0)
    )
    np.testing.assert_allclose(run(tmp_path / "b", 100, time_budget=4), quarters)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")[1]["iteration"] == 4  # each step took 1 fake second


def learner_tensors(learner) -> dict[str, torch.Tensor]:
    state = learner.state_dict()
    tensors = {**state["params"], **state.get("running", {})}
    return {name: value.clone() for name, value in tensors.items()}


@pytest.mark.parametrize("name", ["anil", "reptile", "pretrain"])
def test_only_transductive_learners_predict_a_query_from_the_other_queries(name):
    learner = build_learner(name, OMNIGLOT, small(name, **({"inner_steps_test": 3} if name == "reptile" else {})))
    before = learner_tensors(learner)
    episodes = val_episodes(tasks=2)
    everything = predictions(learner, episodes)[:, 7:12]
    alone = learner.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs[:, 7:12])
    scale = everything.abs().max().item()
    assert scale > 0
    same = torch.allclose(alone, everything, rtol=1e-4, atol=1e-4 * scale)
    assert same == (not learner.transductive)  # ANIL's batch norm uses the statistics of the whole query set
    for key, value in learner_tensors(learner).items():  # evaluation leaves the learner unchanged
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "edition", "n_classes"),
    [
        (OMNIGLOT, {}, "v0", 4400),
        ("MetaOmniglot-5w1s-v1", {}, "v1", 4112),
        ("MetaOmniglot-5w1s-v1", {"scheme": "lake"}, "v0", 850),  # env arguments choose the split too
    ],
)
def test_pretrain_draws_rotated_drawings_of_the_training_classes(env_id, env_kwargs, edition, n_classes):
    """The pretraining classes are the env's train split (its edition) and its images (its preprocessing)."""
    learner = build_learner("pretrain", env_id, {"width": 32, "batch_size": 64}, env_kwargs=env_kwargs)
    scheme = learner.task["scheme"]
    assert scheme == env_kwargs.get("scheme", "vinyals")
    assert isinstance(learner, Pretrain) and len(learner.train_classes.classes) == n_classes
    assert learner.train_classes.classes.tolist() == [list(c) for c in splits.manifest(scheme, "train", edition)]
    assert learner.params["head.weight"].shape[0] == n_classes
    images, classes = learner.sample_batch()
    raw = data.load_omniglot(preprocessing=learner.task["preprocessing"])
    train_characters = set(splits.characters(scheme, "train", edition))
    for image, label in zip(images[0, :, 0], classes.tolist(), strict=True):
        character, turns = learner.train_classes.classes[label].tolist()
        assert character in train_characters
        candidates = torch.rot90(raw[character], turns, dims=(-2, -1))  # its 20 drawings, rotated
        assert (candidates == image).flatten(1).all(dim=1).any()
    assert len(set(classes.tolist())) > 50


def test_seeded_builds_the_same_modules_for_a_seed_and_leaves_the_global_stream_alone():
    from torch import nn

    from metabench import models

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with models.seeded(7):
        first = nn.Linear(4, 2).weight.detach().clone()
    with models.seeded(7):
        again = nn.Linear(4, 2).weight.detach().clone()
    with models.seeded(8):
        other = nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream went on as if nothing was drawn
