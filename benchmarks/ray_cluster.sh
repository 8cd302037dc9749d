#!/usr/bin/env bash
# A two-node Ray cluster on one machine (a head and a second node, one CPU each), joined by address,
# running a MetaNAS search end to end on both nodes. Output: results/cluster/two_node_search.log.
#
#   bash benchmarks/ray_cluster.sh
set -euo pipefail
export RAY_AUTH_MODE=token  # both nodes and the driver use the token in ~/.ray/auth_token
port=6390 out=$(mktemp -d) log=benchmarks/results/cluster/two_node_search.log
mkdir -p "$(dirname "$log")"
trap 'ray stop --force >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
ray start --head --num-cpus=1 --port=$port --include-dashboard=false --disable-usage-stats >/dev/null
ray start --address=127.0.0.1:$port --num-cpus=1 --disable-usage-stats >/dev/null
sleep 5
{
  echo "== $(date -u +%FT%TZ) $(python -c 'import ray; print("ray", ray.__version__)')"
  ray status --address=127.0.0.1:$port | sed -n '/Node status/,/Pending/p; /Total Usage/,/object_store/p'
  command=(metabench search evolution --env MetaNAS-Omniglot-5w1s-v1 --env-kwargs fidelity=5 val_episodes=20
    --evaluations 8 --config population=4 sample=2 --workers 2 --address 127.0.0.1:$port --out "$out")
  echo "== ${command[*]}"
  start=$(date +%s)
  "${command[@]}" 2>&1 | tr '\r' '\n' | grep -v -e 'it/s' -e 's/it' -e '^ *$'
  echo "== wall $(($(date +%s) - start)) s; trace:"
  cut -d, -f1-4 "$out/seed-0/trace.csv"
} | tee "$log"
