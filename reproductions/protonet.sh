#!/usr/bin/env bash
# Prototypical Networks at the published recipe (Snell et al. 2017, and the authors' code's defaults):
# 60-way training episodes with 5 queries per class, Adam 1e-3 halved every 2,000 episodes (the learner's
# defaults), validation every 100 episodes on 100 val episodes of the env's own way and shot (the code's
# epoch of 100 episodes, validated on 5-way), early stopping after 200 validations without a lower val loss.
# Usage: reproductions/protonet.sh ENV_ID SEED [more metabench train options, e.g. --time-budget SECONDS]
# Resumes from reproductions/ENV_ID/protonet-seedSEED/checkpoint.pt if it is there.
set -euo pipefail
env_id=$1 seed=$2
shift 2
exec nice -n 19 metabench train protonet --env "$env_id" --seed "$seed" \
    --out "reproductions/$env_id/protonet-seed$seed" \
    --iterations 1000000 --val-interval 100 --val-episodes 100 --patience 200 "$@"
