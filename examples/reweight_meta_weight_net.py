"""Learning to reweight noisy labels: a Meta-Weight-Net learns, from the losses alone, which examples to trust.

In ``MetaReweight-Sinusoid-v0`` an episode trains a small MLP for 100 SGD steps on 40 points of one sinusoid,
40% of whose targets were replaced by noise; at every step the agent sees each training point's loss and
residual (never the clean targets or the query set) and answers one weight per point. The reward is minus the
clean query loss after the last step. This example meta-trains Meta-Weight-Net (Shu et al. 2019; a loss ->
weight MLP, ``baselines/reweight.py``) on training tasks, then scores it with the env's own gym loop against
uniform weights on the same test tasks.

Run: ``python examples/reweight_meta_weight_net.py [--iterations 100]`` (the default is a smoke-test budget).
"""

from __future__ import annotations

import argparse
from typing import Any

import metabench  # noqa: F401  (registers the environments)
from metabench_baselines.reweight import UniformWeights, agent_policy, compare, train_meta_weight_net


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="MetaReweight-Sinusoid-v0")
    parser.add_argument("--iterations", type=int, default=3, help="meta-iterations of 4 training tasks each")
    parser.add_argument("--episodes", type=int, default=10, help="test episodes")
    args = parser.parse_args(argv)
    agent, history = train_meta_weight_net(args.env, args.iterations, outer_lr=0.01)
    uniform = UniformWeights(UniformWeights.Config(), {"env_id": args.env})
    policies = {"uniform": agent_policy(uniform), "meta-weight-net": agent_policy(agent)}
    _, summary = compare(args.env, policies, args.episodes)
    for name in policies:
        mean, ci = summary[name]["reward"]
        print(f"{name:16s} reward {mean:.3f} +- {ci:.3f}")
    mean, ci = summary["meta-weight-net"]["minus_uniform"]
    print(f"meta-weight-net minus uniform, paired over the same tasks: {mean:+.3f} +- {ci:.3f}")
    return {"history": history, "summary": summary}


if __name__ == "__main__":
    main()
