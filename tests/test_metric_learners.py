"""The metric-based ("learning to compare") learners beyond ProtoNets: they learn on a tiny configuration,
predict a query from the support set and that query alone, and checkpoint everything they learn."""

from __future__ import annotations

import pytest
import torch

from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs import make_env
from metabench.evaluation import evaluate
from metabench.training import train

ENV = "MetaOmniglot-5w1s-v1"
TINY = {"width": 16}


def val_accuracy(learner) -> float:
    summary, _ = evaluate(learner, ENV, split="val", n_episodes=25, seed=1, progress=False)
    return summary["results"]["accuracy_mean"]


@pytest.mark.parametrize("fce", [False, True])
def test_matching_networks_learn_and_are_not_transductive(fce, tmp_path):
    config = {**TINY, "fce": fce}
    untrained = build_learner("matching", ENV, config)
    assert untrained.config.train_way == 5 and untrained.config.train_query == 15  # the test episodes' shape
    episodes = make_env(ENV, split="val").sampler.sample(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = untrained.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
        alone = untrained.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs[:, 4:9])
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(logits.shape[:2]))  # log-probabilities
    torch.testing.assert_close(alone, logits[:, 4:9])  # a query's prediction ignores the other queries

    path = train("matching", ENV, tmp_path, iterations=40, config=config, val_episodes=25, progress=False)
    learner, checkpoint = load_checkpoint(path)
    if fce:
        assert set(checkpoint["learner"]["fce"]) == {"support", "query"}
        lstm = learner.support_lstm.state_dict()
        assert any(not torch.equal(value, untrained.support_lstm.state_dict()[name]) for name, value in lstm.items())
    first, last = checkpoint["history"][0]["val_accuracy"], checkpoint["history"][-1]["val_accuracy"]
    print(f"matching fce={fce}: val accuracy {first:.3f} untrained, {last:.3f} after 40 iterations")
    assert last > first + 0.1
    assert val_accuracy(learner) == pytest.approx(val_accuracy(load_checkpoint(path)[0]))


def test_relation_networks_learn_score_pairs_in_0_1_and_are_not_transductive(tmp_path):
    config = {"relation_width": 16, "relation_hidden": 8}
    untrained = build_learner("relation", ENV, config)
    assert untrained.config.train_way == 5 and untrained.config.train_query == 19  # the paper's 5w1s episodes
    episodes = make_env(ENV, split="val").sampler.sample(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = untrained.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs)
        alone = untrained.predict(episodes.support_inputs, episodes.support_targets, episodes.query_inputs[:, 4:9])
    assert logits.shape == (2, 75, 5) and bool((logits <= 0).all())  # log scores of pairs in [0, 1]
    torch.testing.assert_close(alone, logits[:, 4:9])

    path = train("relation", ENV, tmp_path, iterations=40, config=config, val_episodes=25, progress=False)
    learner, checkpoint = load_checkpoint(path)
    assert "relation" in checkpoint["learner"]
    first, last = checkpoint["history"][0]["val_accuracy"], checkpoint["history"][-1]["val_accuracy"]
    print(f"relation: val accuracy {first:.3f} untrained, {last:.3f} after 40 iterations")
    assert last > first + 0.1
