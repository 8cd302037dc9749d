#!/usr/bin/env bash
# One resumable slice of full-budget training on a lent GPU machine (the `device` tool), so a
# 60,000-iteration run can span sessions. The machine has torch but not gymnasium/pooch, and no
# Omniglot: both travel in the ignored folder .device/.
#
# Prepare here, once per session (CPU machine, repository root):
#   echo /.device/ >> .git/info/exclude; mkdir -p .device/whl
#   METABENCH_CACHE=$PWD/.device/cache metabench data prepare          # 25 MB preprocessed tensor
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .device/whl \
#       gymnasium==1.4.0 farama-notifications==0.0.6 pooch==1.9.0 cloudpickle==3.1.1
#   (copy an earlier slice's runs/AGENT-ENV/checkpoint.pt into .device/runs/AGENT-ENV/ to resume)
# Then one device call per slice:
#   run(command="bash benchmarks/gpu_train_slice.sh maml MetaOmniglot-5w1s-v0 420",
#       carry=[".device"], timeout_s=600)
# and copy the returned run/ files (checkpoint.pt, log.csv, curve.png) back into .device/runs/... .
set -euo pipefail
AGENT=${1:-maml}
ENV_ID=${2:-MetaOmniglot-5w1s-v0}
BUDGET=${3:-420}          # seconds of training in this slice (validation excluded)
ITERATIONS=${4:-60000}

python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .   # registers the learners
export METABENCH_CACHE=$PWD/.device/cache
RUN=.device/runs/$AGENT-$ENV_ID
mkdir -p "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$RUN/gpu.txt"
python3 -m metabench.cli train "$AGENT" --env "$ENV_ID" --iterations "$ITERATIONS" --device cuda \
    --out "$RUN" --time-budget "$BUDGET" --val-interval 2000 --val-episodes 200
mkdir -p "$OUT/run"
cp "$RUN"/checkpoint.pt "$RUN"/log.csv "$RUN"/curve.png "$RUN"/gpu.txt "$OUT/run/"
