#!/usr/bin/env bash
# One cell of the v1 baseline table: train, evaluate on the frozen test protocol, submit, verify.
#
#   bash benchmarks/table_v1.sh AGENT ENV_ID SEED BUDGET "METHOD" PAPER_URL [KEY=VALUE config ...]
#
# Trains AGENT on ENV_ID for BUDGET: seconds of training (e.g. 300), or iterations (e.g. 656it: how the
# extra seeds of an entry repeat the seed-0 run's iteration count). One thread; machines here are
# shared, so every run's budget is recorded in iterations and episodes as well as wall time. Keeps the last checkpoint (no
# model selection: the test split is read once, by the evaluation), submits it to leaderboard/ and
# re-runs it with `metabench leaderboard verify`. Logs go to runs/v1/logs/. With SNAPSHOT=DIR the
# commands run the metabench code copied to DIR (so that edits to the checkout cannot reach a run in
# flight) and write to this checkout's leaderboard/.
set -euo pipefail
agent=$1 env=$2 seed=$3 budget=$4 method=$5 paper=$6
shift 6
config=("$@")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [[ -n ${SNAPSHOT:-} ]]; then
  export PYTHONPATH=$SNAPSHOT METABENCH_LEADERBOARD=${METABENCH_LEADERBOARD:-$PWD/leaderboard}
fi
metabench() { python3 -m metabench.cli "$@"; }
run=runs/v1/${agent}-${env}-s${seed}
logs=runs/v1/logs
mkdir -p "$logs"
log=$logs/${agent}-${env}-s${seed}.log
if [[ $budget == *it ]]; then
  limit=(--iterations "${budget%it}") budget_text="${budget%it} iterations (the seed-0 entry's count)"
else
  limit=(--time-budget "$budget") budget_text="${budget} s of training" budget=${budget}s
fi
train_command=(metabench train "$agent" --env "$env" --seed "$seed" "${limit[@]}" --out "$run")
if ((${#config[@]})); then train_command+=(--config "${config[@]}"); fi
case $agent in maml | fomaml) code=baselines/maml.py ;; *) code=baselines/$agent.py ;; esac
name=${agent}-seed${seed}-cpu-${budget}
quiet() { tr '\r' '\n' | sed -u '/it\/s/d; /s\/it/d'; }  # drop progress-bar frames from the log
{
  echo "== $(date -u +%FT%TZ) ${train_command[*]}"
  "${train_command[@]}" 2>&1 | quiet
  echo "== $(date -u +%FT%TZ) evaluate"
  metabench evaluate --agent "$agent" --checkpoint "$run/checkpoint.pt" --env "$env" 2>&1 | quiet
  echo "== $(date -u +%FT%TZ) submit"
  metabench submit "$run/evaluation-$env" --method "$method" --paper "$paper" --code "$code" \
    --test-data-for-model-selection no --name "$name" --train-command "${train_command[*]}" \
    --notes "CPU budget: ${budget_text} on one thread of a shared 2-core machine, seed ${seed}; last checkpoint, no model selection."
  echo "== $(date -u +%FT%TZ) verify $env/$name"
  metabench leaderboard verify "$env/$name" 2>&1 | quiet
  echo "== $(date -u +%FT%TZ) done"
} >>"$log" 2>&1
