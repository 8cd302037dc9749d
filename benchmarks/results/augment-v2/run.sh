#!/usr/bin/env bash
# The searches of the MetaAugment-Omniglot-5w1s-v2 board (issue 24): random search, evolution, REINFORCE and CMA-ES,
# each rewarded by the mean val reward of 3 learners (train seeds 0-2: one seed's reward moves a policy's gain by
# 0.075 s.d., more than good policies differ), then the best candidate of each (by that val reward) scored once by
# the board's registered test protocol (one learner, train seed 0; 1,000 test episodes), submitted and verified.
# Each stage is skipped once its output exists and a search resumes where it stopped, so re-running resumes.
# Cost: about 2 CPU minutes per learner trained, so 6 per evaluation: 12 evaluations per searcher are 72 CPU minutes.
# Usage: OMP_NUM_THREADS=1 nice -n 19 benchmarks/results/augment-v2/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
E=MetaAugment-Omniglot-5w1s-v2
R=benchmarks/results/augment-v2
N=12  # evaluations per searcher
source benchmarks/results/stages.sh

declare -A CONFIG=([random]="" [evolution]="population=4 sample=2" [reinforce]="" [cmaes]="popsize=4")
for method in random evolution reinforce cmaes; do
    if [ ! -f $R/$method/seed-0/checkpoint.pt ]; then
        log "search $method"
        # shellcheck disable=SC2086  # CONFIG holds KEY=VALUE words
        metabench search $method --env $E --evaluations $N --seeds 0 --env-kwargs train_seeds=3 --out $R/$method \
            ${CONFIG[$method]:+--config ${CONFIG[$method]}}
    fi
done
metabench search-plot $R/random $R/evolution $R/reinforce $R/cmaes --out $R/best_so_far.png \
    --title "$E: mean val reward of 3 train seeds" --csv $R/search_summary.csv

S=(--code baselines/search.py --test-data-for-model-selection no)
declare -A TITLE=([random]="Random search" [evolution]="Regularised evolution" [reinforce]="REINFORCE" [cmaes]="CMA-ES")
for method in random evolution reinforce cmaes; do
    evaluate open-loop $R/$method/seed-0/checkpoint.pt
    submit_verified $method-search $R/$method/seed-0/evaluation $R/$method/seed-0/checkpoint.pt "${S[@]}" \
        --method "${TITLE[$method]}, $N evaluations of the mean val reward of 3 train seeds" \
        --train-command "metabench search $method --env $E --evaluations $N --seeds 0 --env-kwargs train_seeds=3 ${CONFIG[$method]:+--config ${CONFIG[$method]}}"
done
log "done"
