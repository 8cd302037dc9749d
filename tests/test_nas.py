"""MetaNAS: the search space (metabench.nas) and the env: valid networks, one space, caching, no test data."""

from __future__ import annotations

import itertools
import json
import warnings

import gymnasium as gym
import gymnasium.utils.env_checker as gym_checker
import numpy as np
import pytest
import stable_baselines3.common.env_checker as sb3_checker
import torch
import torch.nn.functional as F

import metabench  # noqa: F401  (registers the envs)
from metabench import evaluation, models, nas
from metabench.checkpoints import build_learner, load_checkpoint
from metabench.envs.nas import MetaNASEnv
from metabench.evaluation import evaluate, evaluate_checkpoint, rescore
from metabench.search import candidate_space, load_searcher, open_loop_checkpoint, play

TINY = {"fidelity": 2, "val_episodes": 4, "learner_config": {"train_way": 5, "train_query": 2}}
SMALL_NET = [0, 0, 0, 1, 0, 0, 3, 0, 3, 2, 0, 1]  # conv3x3-16-maxpool, sepconv3x3-16-maxpool, skip-16-none, dilconv


def tiny_env(mode: str = "sequential", **kwargs) -> gym.Env:
    return gym.make("MetaNAS-Omniglot-5w1s-v0", **{**TINY, "mode": mode, **kwargs})


# --- the search space ----------------------------------------------------------------------------


def test_every_downsampling_sequence_and_first_cell_gives_a_valid_network():
    """Validity depends only on the feature-map sizes and on the first cell: try all of those, run the network."""
    rng = np.random.default_rng(0)
    images = torch.randint(0, 256, (1, 3, 1, 28, 28), dtype=torch.uint8)
    for downsampling in itertools.product(range(4), repeat=4):
        for op, width in itertools.product(range(4), repeat=2):
            vector = rng.integers(0, 4, 12)
            vector[2::3], vector[:2] = downsampling, (op, width)
            nas.check(nas.decode(vector))
        architecture = nas.decode(vector)
        params = models.expand(nas.init(architecture, torch.Generator().manual_seed(0)), 1)
        out = nas.forward(architecture, params, images)
        assert out.shape == (1, 3, architecture[-1].width) and torch.isfinite(out).all()
    assert nas.SPACE_SIZE == 16_777_216


def test_encode_decode_and_strings_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(50):
        vector = rng.integers(0, 4, 12)
        architecture = nas.decode(vector)
        assert np.array_equal(nas.encode(architecture), vector)
        assert nas.parse(nas.to_string(architecture)) == architecture
    assert nas.to_string(nas.CONV4) == ",".join(["conv3x3-64-maxpool"] * 4)


@pytest.mark.parametrize(
    ("decisions", "message"),
    [
        ([0] * 11, "shape"),
        ([0] * 11 + [4], r"cell3\.downsampling"),
        ([-1] + [0] * 11, r"cell0\.op"),
        ([0.5] + [0] * 11, "integer"),
        ([np.nan] + [0] * 11, "integer"),
        (["a"] * 12, "dtype"),
    ],
)
def test_invalid_decisions_are_refused_clearly(decisions, message):
    with pytest.raises(ValueError, match=message):
        nas.decode(np.array(decisions))


@pytest.mark.parametrize(
    "text", ["", "conv3x3-64", "conv7x7-64-maxpool", "conv3x3-64-maxpool2", "conv3x3-0-none", "skip-1-none"]
)
def test_bad_architecture_strings_are_refused(text):
    with pytest.raises(ValueError):
        nas.parse(text)


def test_too_many_pools_are_refused_outside_the_space():
    with pytest.raises(ValueError, match="pools a 1x1"):
        nas.check((nas.Cell("conv3x3", 8, "maxpool"),) * 5)


def test_conv4_point_is_metabench_conv4():
    """Same parameter names, same initialisation from a seed, same embedding (batch and running statistics)."""
    ours = nas.init(nas.CONV4, torch.Generator().manual_seed(3))
    theirs = models.conv4_init(None, torch.Generator().manual_seed(3))
    assert list(ours) == list(theirs) and all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert nas.running_stats(nas.CONV4).keys() == models.conv4_running_stats().keys()
    images = torch.randint(0, 256, (2, 6, 1, 28, 28), dtype=torch.uint8)
    second = models.conv4_init(None, torch.Generator().manual_seed(4))
    params = {name: torch.stack([ours[name], second[name]]) for name in ours}  # two tasks, two networks
    assert torch.allclose(nas.forward(nas.CONV4, params, images), models.conv4(params, images), atol=1e-6)
    running_a, running_b = nas.running_stats(nas.CONV4), models.conv4_running_stats()
    shared = models.expand(ours, 1)
    for training in (True, False):
        a = nas.forward(nas.CONV4, shared, images[:1], running_a, training)
        b = models.conv4(shared, images[:1], "maxpool", running_b, training)
        assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(running_a[name], running_b[name]) for name in running_a)


def test_forward_matches_a_torch_nn_reference_and_batches_tasks():
    """Every op and down-sampling against torch.nn layers built from the same parameters; T tasks = T calls."""
    architecture = nas.parse(
        "sepconv3x3-16-stride,dilconv3x3-32-avgpool,skip-48-maxpool,skip-48-stride,sepconv3x3-8-none"
    )
    params = nas.init(architecture, torch.Generator().manual_seed(0))
    noise = torch.Generator().manual_seed(1)
    for name in params:  # non-trivial batch-norm affine terms
        if name.startswith("norm"):
            params[name] = params[name] + 0.1 * torch.randn(params[name].shape, generator=noise)
    images = torch.rand(1, 5, 1, 28, 28)

    def bn_relu(h: torch.Tensor, index: int) -> torch.Tensor:
        return F.relu(F.batch_norm(h, None, None, params[f"norm{index}.weight"], params[f"norm{index}.bias"], True))

    h = images[0]
    h = F.conv2d(h, params["conv0.depthwise"], None, stride=2, padding=1, groups=1)
    h = bn_relu(F.conv2d(h, params["conv0.weight"], params["conv0.bias"]), 0)
    h = F.avg_pool2d(bn_relu(F.conv2d(h, params["conv1.weight"], params["conv1.bias"], padding=2, dilation=2), 1), 2)
    h = F.max_pool2d(bn_relu(F.conv2d(h, params["conv2.weight"], params["conv2.bias"]), 2), 2)  # 1x1 projection
    h = h[:, :, ::2, ::2]  # identity skip with stride
    h = F.conv2d(h, params["conv4.depthwise"], None, padding=1, groups=48)
    h = bn_relu(F.conv2d(h, params["conv4.weight"], params["conv4.bias"]), 4)
    reference = h.mean(dim=(2, 3))
    assert "conv3.weight" not in params  # the identity skip has no parameters
    out = nas.forward(architecture, models.expand(params, 1), images)
    assert out.shape == (1, 5, 8) and torch.allclose(out[0], reference, atol=1e-5)

    other = nas.init(architecture, torch.Generator().manual_seed(1))
    stacked = {name: torch.stack([params[name], other[name]]) for name in params}
    two = torch.cat([images, torch.rand(1, 5, 1, 28, 28)])
    batched = nas.forward(architecture, stacked, two)
    for task, task_params in enumerate((params, other)):
        alone = nas.forward(architecture, models.expand(task_params, 1), two[task : task + 1])
        assert torch.allclose(batched[task], alone[0], atol=1e-5)


def test_params_and_flops_by_hand():
    assert nas.count_params(nas.CONV4) == (64 * 9 + 64 + 128) + 3 * (64 * 64 * 9 + 64 + 128)
    by_hand = 2 * 9 * 64 * (28 * 28 * 1 + 14 * 14 * 64 + 7 * 7 * 64 + 3 * 3 * 64)
    assert nas.flops(nas.CONV4) == by_hand
    sep = nas.parse("sepconv3x3-16-stride,skip-16-none,skip-32-none,conv3x3-16-none")
    by_hand = 2 * (14 * 14 * 9 + 14 * 14 * 16) + 0 + 2 * 14 * 14 * 16 * 32 + 2 * 14 * 14 * 32 * 16 * 9
    assert nas.flops(sep) == by_hand
    assert nas.count_params(sep) == (9 + 16 + 16 + 32) + 0 + (16 * 32 + 32 + 64) + (32 * 16 * 9 + 16 + 32)


# --- the environment -----------------------------------------------------------------------------


def test_both_modes_describe_the_same_space_and_give_the_same_reward():
    sequential, oneshot = tiny_env("sequential"), tiny_env("oneshot")
    assert sequential.unwrapped.horizon == 12 and oneshot.unwrapped.horizon == 1
    assert sequential.action_space == gym.spaces.Discrete(4)
    assert candidate_space(sequential) == candidate_space(oneshot) == oneshot.action_space
    observation, _ = sequential.reset(seed=0)
    assert not observation.any()
    for t, decision in enumerate(SMALL_NET[:-1]):
        observation, reward, terminated, _, info = sequential.step(decision)
        assert reward == 0.0 and not terminated and info == {}
        assert np.array_equal(observation[: t + 1], np.array(SMALL_NET[: t + 1]) + 1) and not observation[t + 1 :].any()
    observation, reward, terminated, _, info = sequential.step(SMALL_NET[-1])
    assert terminated and np.array_equal(observation, np.array(SMALL_NET) + 1)
    assert reward < 0 and not sequential.unwrapped.last_cached
    reward_oneshot, info_oneshot = play(oneshot, SMALL_NET)  # a separate env: its own cache
    assert not oneshot.unwrapped.last_cached and reward_oneshot == reward
    assert info_oneshot["val_accuracy"] == info["accuracy"] == info["val_accuracy"]
    assert info["architecture"] == nas.to_string(nas.decode(SMALL_NET))
    assert info["params"] == nas.count_params(nas.decode(SMALL_NET)) and info["flops"] > 0


def test_cache_returns_identical_results_and_charges_the_simulated_cost(tmp_path):
    env = tiny_env("oneshot", cache_dir=str(tmp_path))
    first_reward, first = play(env, SMALL_NET)
    first_seconds = env.unwrapped.last_seconds
    second_reward, second = play(env, SMALL_NET)
    assert second_reward == first_reward and second.keys() == first.keys()
    assert all(np.array_equal(second[key], first[key]) for key in first)  # the info too: a repeat repeats exactly
    assert env.unwrapped.last_cached and env.unwrapped.last_seconds == 0 and first_seconds == first["cost_seconds"] > 0
    assert env.unwrapped.evaluations == 2 and env.unwrapped.cache_hits == 1
    assert env.unwrapped.total_seconds == first_seconds and env.unwrapped.total_cost_seconds == 2 * first_seconds
    assert len(list(tmp_path.glob("*.json"))) == 1
    from_disk_env = tiny_env("sequential", cache_dir=str(tmp_path))
    from_disk_reward, from_disk = play(from_disk_env, SMALL_NET)
    assert from_disk_env.unwrapped.last_cached and from_disk_reward == first_reward
    assert from_disk["val_accuracy"] == first["val_accuracy"]
    recomputed_reward, _ = play(tiny_env("oneshot"), SMALL_NET)  # deterministic: the cache changes nothing
    assert recomputed_reward == first_reward
    other_seed_reward, _ = play(tiny_env("oneshot", cache_dir=str(tmp_path), train_seed=1), SMALL_NET)
    assert other_seed_reward != first_reward  # the seed is part of the key


def test_reward_never_reads_the_test_split(splits_read):
    env = tiny_env("oneshot")
    reward, info = play(env, SMALL_NET)
    assert np.isfinite(reward) and sorted(set(splits_read)) == ["train", "val"]
    assert "test" not in str(env.unwrapped.protocol)


def test_invalid_actions_and_order_are_refused_clearly():
    env = tiny_env("sequential")
    with pytest.raises(gym.error.ResetNeeded):
        env.unwrapped.step(0)
    env.reset(seed=0)
    env.unwrapped.step(1)
    with pytest.raises(ValueError, match=r"cell0\.width.*\[0, 4\)"):
        env.unwrapped.step(4)
    with pytest.raises(ValueError, match=r"cell0\.width"):
        env.unwrapped.step(np.array([1, 2]))
    oneshot = tiny_env("oneshot")
    oneshot.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        oneshot.unwrapped.step(np.zeros(11, dtype=np.int64))
    with pytest.raises(ValueError, match=r"cell1\.op"):
        oneshot.unwrapped.step(np.array([0, 0, 0, 9] + [0] * 8))
    for bad in ({"mode": "both"}, {"fidelity": 0}, {"val_episodes": 1.5}, {"learner_config": {"architecture": "x"}}):
        with pytest.raises(ValueError):
            MetaNASEnv(**{**TINY, **bad})


def test_spaces_hold_every_observation_and_env_checkers_pass():
    for mode in ("sequential", "oneshot"):
        env = tiny_env(mode)
        observation, _ = env.reset(seed=0)
        terminated = False
        while not terminated:
            assert env.observation_space.contains(observation)
            observation, _, terminated, _, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sb3_checker.check_env(env.unwrapped)
            gym_checker.check_env(env.unwrapped)


def test_protonet_trains_any_architecture_of_the_space():
    text = nas.to_string(nas.decode(SMALL_NET))
    learner = build_learner("protonet", "MetaOmniglot-5w1s-v0", {"architecture": text, "train_way": 5})
    assert learner.architecture == nas.decode(SMALL_NET)
    assert set(learner.params) == set(nas.init(learner.architecture, torch.Generator()))
    support = torch.randint(0, 256, (2, 5, 1, 28, 28), dtype=torch.uint8)
    logits = learner.predict(support, torch.arange(5).repeat(2, 1), support)
    assert logits.shape == (2, 5, 5)
    with pytest.raises(ValueError, match="width"):
        build_learner("protonet", "MetaOmniglot-5w1s-v0", {"architecture": text, "width": 32})


def test_reinforce_controller_improves_its_mean_reward():
    """The RL-NAS controller (REINFORCE, LSTM) on a tiny, fast env: the last evaluations beat the first ones."""
    env = tiny_env("sequential", fidelity=1, val_episodes=2)
    searcher = load_searcher("reinforce")(candidate_space(env), 0, lr=0.05)
    rewards = []
    for _ in range(120):
        candidate = searcher.ask()
        reward, _ = play(env, candidate)
        searcher.tell(candidate, reward)
        rewards.append(reward)
    assert np.mean(rewards[-30:]) > np.mean(rewards[:30])


def test_the_reward_at_a_fidelity_is_the_val_score_a_longer_run_passes():
    """One training run passes every fidelity: what makes the fidelity study one run per architecture."""
    env = tiny_env("oneshot", fidelity=3).unwrapped
    reward, _ = play(env, SMALL_NET)
    runs = env.train(nas.decode(SMALL_NET), [1, 3, 5])
    scores = {episodes: env.score_val(learner)["reward"] for episodes, learner, _ in runs}
    assert scores[3] == reward and scores[1] != reward and scores[5] != reward
    with pytest.raises(ValueError, match="increase"):
        list(env.train(nas.decode(SMALL_NET), [3, 1]))


def test_a_design_is_trained_by_the_recipe_and_scored_on_the_omniglot_test_episodes(tmp_path):
    """metabench evaluate on a search's answer: train the architecture, keep it, score MetaOmniglot's test episodes."""
    env_id, kwargs = "MetaNAS-Omniglot-5w1s-v1", {**TINY, "test_train_episodes": 3}
    training = {"wall_seconds": 9.0, "meta_batch": 1, "episodes_seen": 7, "device": "cpu", "device_name": "cpu"}
    answer = open_loop_checkpoint(env_id, SMALL_NET, tmp_path / "search" / "checkpoint.pt", training=training, seed=4)
    summary, out = evaluate_checkpoint(answer, env_id, env_kwargs=kwargs, n_episodes=50, progress=False)
    design = nas.to_string(nas.decode(SMALL_NET))
    assert summary["agent"] == "protonet" and summary["design"]["answer"] == design
    assert summary["design"]["agent"] == "open-loop" and summary["protocol"]["test_recipe"]["train_episodes"] == 3
    assert "50 episodes instead of the protocol's 1000" in summary["note"]

    # exactly what training the design by hand and scoring it on MetaOmniglot's own protocol gives
    env = gym.make(env_id, **kwargs).unwrapped
    by_hand, by_hand_records = evaluate(
        env.train_for_test(design), "MetaOmniglot-5w1s-v1", n_episodes=50, progress=False
    )
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert records == by_hand_records and summary["results"] == by_hand["results"]
    assert summary["protocol"]["episodes_sha256"] == by_hand["protocol"]["episodes_sha256"]
    registered = evaluation.test_protocol(env_id, 50)
    omniglot = evaluation.test_protocol("MetaOmniglot-5w1s-v1", 50)
    assert registered["episodes_sha256"] == omniglot["episodes_sha256"]
    assert registered["test_recipe"]["train_episodes"] == 500 and registered["test_recipe"]["learner"] == "protonet"

    # the stored checkpoint is the trained network, with the search's budget; re-scoring it repeats the records
    learner, state = load_checkpoint(out / "checkpoint.pt")
    assert learner.config.architecture == design and (state["seed"], state["training"]) == (4, training)
    assert rescore(learner, env_id, [0, 3, 27]) == [records[0], records[3], records[27]]  # 27: within a chunk
    runs = [json.loads(line) for line in (out / "test_runs.jsonl").read_text().splitlines()]
    assert [run["checkpoint_sha256"] for run in runs] == [summary["checkpoint"]["sha256"]]

    agent = build_learner("open-loop", env_id, {"candidate": SMALL_NET})
    with pytest.raises(ValueError, match="trains the design first"):
        evaluate(agent, env_id, n_episodes=5, progress=False)


def test_reference_designs_are_written_as_answers_with_their_budget(tmp_path):
    """nas_designs: Conv-4 and a seeded random draw at zero budget; a search's best candidate with the search's."""
    from metabench_baselines import nas_designs

    fixed = nas_designs.write_fixed("MetaNAS-Omniglot-5w1s-v1", tmp_path, "cmd")
    _, conv4 = load_checkpoint(fixed[0])
    assert conv4["config"]["candidate"] == nas.encode(nas.CONV4).tolist() and conv4["training"]["episodes_seen"] == 0
    _, drawn = load_checkpoint(fixed[1])
    assert drawn["config"]["candidate"] == np.random.default_rng(0).integers(4, size=12).tolist()
    run = tmp_path / "search"
    run.mkdir()
    best = {
        "method": "evolution",
        "env_id": "MetaNAS-Omniglot-5w1s-v0",
        "seed": 2,
        "evaluations": 30,
        "episodes_per_evaluation": 1,
        "wall_seconds": 485.7,
        "best_reward": -1.2,
        "best_candidate": SMALL_NET,
    }
    (run / "best.json").write_text(json.dumps(best))
    learner, state = load_checkpoint(nas_designs.write_from_search(run, "MetaNAS-Omniglot-5w1s-v1", tmp_path, "cmd"))
    assert state["config"]["candidate"] == SMALL_NET and (state["iteration"], state["seed"]) == (30, 2)
    assert state["training"]["wall_seconds"] == 485.7 and state["training"]["search"]["env_id"].endswith("-v0")
    assert nas.decode(np.array([learner.act(None) for _ in range(12)])) == nas.decode(SMALL_NET)
