"""DARTS on MetaNAS: the relaxation contains the space, its gradients, both orders, the searcher end to end."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import metabench  # noqa: F401  (registers the envs)
from metabench import models, nas
from metabench.search import candidate_space, load_searcher, play, search

ENV_ID = "MetaNAS-Omniglot-5w1s-v1"
TINY = {
    "fidelity": 2,
    "val_episodes": 2,
    "n_query": 2,
    "learner_config": {"train_way": 5, "train_query": 2},
    "mode": "oneshot",
}
WIDTHS = nas.proxy_widths(8)  # (2, 4, 6, 8)


@pytest.fixture(scope="module")
def env() -> gym.Env:
    return gym.make(ENV_ID, **TINY)


def tiny_darts(env: gym.Env, **config):
    searcher = load_searcher("darts")(candidate_space(env), 0, **{"width": 8, "steps": 2, "val_batch": 1, **config})
    searcher.attach(env)
    return searcher


def test_one_hot_weights_give_the_architectures_network():
    """Each op, identity and projecting skips, each down-sampling and width, and Conv-4's."""
    params = nas.supernet_init(torch.Generator().manual_seed(0), WIDTHS)
    images = torch.randint(0, 256, (1, 6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    vectors = [nas.encode(nas.CONV4), [3, 0, 3, 3, 0, 2, 1, 3, 0, 2, 1, 3], [0, 2, 1, 3, 2, 0, 2, 0, 3, 1, 1, 1]]
    for vector in vectors:
        architecture = tuple(
            nas.Cell(cell.op, WIDTHS[nas.WIDTHS.index(cell.width)], cell.downsampling) for cell in nas.decode(vector)
        )
        relaxed = nas.relaxed_forward(models.expand(params, 1), nas.one_hot(architecture, WIDTHS), images, WIDTHS)
        exact = nas.forward(architecture, models.expand(nas.subnet(params, architecture), 1), images)
        width = architecture[-1].width
        assert torch.allclose(relaxed[..., :width], exact, atol=1e-5), nas.to_string(architecture)
        assert torch.all(relaxed[..., width:] == 0)
        assert np.array_equal(nas.argmax(nas.one_hot(architecture, WIDTHS)), vector)


def test_architecture_weights_get_gradients_from_the_val_loss_and_the_orders_differ(env):
    darts = tiny_darts(env)
    relaxation = darts.relaxation
    train, val = relaxation.train_episodes(torch.Generator().manual_seed(0)), relaxation.val_episodes[:1]
    first = darts.arch_gradient(train, val, xi=0.5, order=1)
    second = darts.arch_gradient(train, val, xi=0.5, order=2)
    assert first.shape == (nas.CELLS, 3, nas.CHOICES) and torch.isfinite(first).all() and first.abs().sum() > 0
    assert (first.abs().sum(dim=-1) > 0).all()  # every decision of every cell is learned
    assert torch.isfinite(second).all() and not torch.allclose(first, second)
    assert torch.allclose(darts.arch_gradient(train, val, xi=0.0, order=2), first, atol=1e-6)  # xi = 0: first order


def test_second_order_steps_move_the_architecture_to_a_design_the_env_scores(env):
    darts = tiny_darts(env, order=2, steps=1)
    before = darts.alpha.detach().clone()
    candidate = darts.ask()
    assert not torch.equal(before, darts.alpha.detach()) and darts.costs()["steps"] == 1
    design = nas.to_string(nas.decode(candidate))
    assert nas.parse(design) == nas.decode(candidate)
    reward, info = play(env, candidate)
    assert np.isfinite(reward) and info["architecture"] == design


def test_darts_runs_through_metabench_search_and_records_its_cost(tmp_path):
    config = {"width": 8, "steps": 2, "val_batch": 1}
    result = search("darts", ENV_ID, evaluations=1, out_dir=tmp_path, env_kwargs=TINY, config=config, progress=False)
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["method"] == "darts" and len(result.trace) == 1
    assert best["total_searcher_steps"] == 2 and best["total_searcher_cpu_seconds"] > 0
    assert best["total_searcher_seconds"] > 0 and best["total_cost_seconds"] > 0  # the supernet, then one candidate
    nas.decode(np.asarray(result.answer, dtype=np.int64))
