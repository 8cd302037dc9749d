#!/usr/bin/env bash
# GPU checks on a lent machine (the `device` tool), one call: CUDA smoke test of the envs, episode
# throughput, MAML step timings (loop vs batched), a time-boxed MAML slice and its test evaluation.
# Prepare .device/ first (see benchmarks/gpu_train_slice.sh; also copy the two npz files into
# .device/data), then: run(command="bash benchmarks/gpu_check.sh", carry=[".device"], timeout_s=420)
set -x
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
export METABENCH_CACHE=$PWD/.device/cache METABENCH_DATA=$PWD/.device/data
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/cuda_smoke.txt"
import gymnasium as gym, numpy as np, torch, metabench
env = gym.make("MetaOmniglot-20w1s-v0", device="cuda")
obs, _ = env.reset(seed=0)
cpu_obs, _ = gym.make("MetaOmniglot-20w1s-v0").reset(seed=0)
print("same task on cuda and cpu:", all(np.array_equal(obs[k], cpu_obs[k]) for k in obs))
_, reward, *_ = env.step(np.zeros((300, 20), np.float32))
print("reward", reward, "expected", -np.log(20))
envs = gym.make_vec("MetaOmniglot-5w1s-v0", num_envs=32, device="cuda")
envs.reset(seed=0)
print("vector rewards", envs.step(np.zeros((32, 75, 5), np.float32))[1][:3])
PY
timeout 60 python3 benchmarks/episode_throughput.py --device cuda --seconds 2 && cp benchmarks/results/episode_throughput-cuda.json "$OUT/"
timeout 100 python3 benchmarks/maml_step.py --device cuda --iterations 5 && cp benchmarks/results/maml_step-*cuda.json "$OUT/"
RUN=.device/runs/maml-5w1s
timeout 170 python3 -m metabench.cli train maml --env MetaOmniglot-5w1s-v0 --device cuda --iterations 60000 \
    --time-budget 120 --val-interval 1000 --val-episodes 200 --out $RUN 2>&1 | tr '\r' '\n' | grep -v "it/s" | tail -20
timeout 60 python3 -m metabench.cli evaluate --agent maml --checkpoint $RUN/checkpoint.pt --env MetaOmniglot-5w1s-v0 \
    --device cuda 2>&1 | tr '\r' '\n' | tail -3
mkdir -p "$OUT/run"; cp $RUN/log.csv $RUN/curve.png $RUN/evaluation-MetaOmniglot-5w1s-v0/summary.json "$OUT/run/"
