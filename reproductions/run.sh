#!/usr/bin/env bash
# One slice of a reproduction run at its paper's recipe; re-running the same line resumes the run from
# reproductions/ENV_ID/METHOD-seedSEED/checkpoint.pt (README: "Reproductions").
# Usage: reproductions/run.sh METHOD ENV_ID SEED [more `metabench train` options, e.g. --time-budget SECONDS]
#
# protonet  Snell et al. 2017 and the authors' code's defaults: 60-way training episodes, 5 queries per class,
#           Adam 1e-3 halved every 2,000 episodes (the learner's defaults); validation every 100 episodes on
#           100 val episodes of the env's way and shot (the code's epoch of 100 episodes, validated on 5-way);
#           early stopping after 200 validations without a lower val loss (the code's patience).
# maml      Finn et al. 2017, 5-way: meta-batch 32, one inner step of 0.4 (3 at test), Adam 1e-3, K queries
#           per class in training tasks, 60,000 meta-iterations; validation every 500 on 200 val episodes.
# fomaml    the same, first order.
# anil      Raghu et al. 2020: MAML's recipe with the head alone adapted.
# maml++    Antoniou et al. 2019 and their code's Omniglot configs (the learner's defaults): meta-batch 8, 5 inner
#           steps, 100 epochs x 500 = 50,000 meta-iterations; validation every 500 (an epoch) on 200 val episodes.
# reptile   Nichol et al. 2018, the appendix's Omniglot settings (the learner's defaults): Adam inner loop,
#           meta-batch 5, 100,000 meta-iterations with the outer step annealed 1 -> 0; validation every
#           2,000 on 100 val episodes (50 test steps each).
# matching  Vinyals et al. 2016 on the shared Conv-4, trained on the test episodes' shape with
#           ProtoNets' validation and early stopping.
# relation  Sung et al. 2018: 1,000,000 episodes at most, validation every 5,000 on 100 val episodes,
#           best.pt the best validation (patience 40 validations = 200,000 episodes).
# pretrain  Classifier pretraining + fine-tuning (Chen et al. 2019): Adam steps of 128 images, validation
#           every 1,000 steps on 100 val episodes, early stopping after 20 validations without improvement
#           (the Lake boards' second entry).
set -euo pipefail
method=$1 env_id=$2 seed=$3
shift 3
case $method in
    protonet | matching) recipe=(--iterations 1000000 --val-interval 100 --val-episodes 100 --patience 200) ;;
    maml | fomaml | anil) recipe=(--iterations 60000 --val-interval 500 --val-episodes 200) ;;
    maml++) recipe=(--iterations 50000 --val-interval 500 --val-episodes 200) ;;
    reptile) recipe=(--iterations 100000 --val-interval 2000 --val-episodes 100) ;;
    relation) recipe=(--iterations 1000000 --val-interval 5000 --val-episodes 100 --patience 40) ;;
    pretrain) recipe=(--iterations 1000000 --val-interval 1000 --val-episodes 100 --patience 20) ;;
    *) echo "run.sh: no recipe for $method (protonet, maml, fomaml, anil, maml++, reptile, matching, relation, pretrain)" >&2
       exit 1 ;;
esac
exec nice -n 19 metabench train "$method" --env "$env_id" --seed "$seed" \
    --out "reproductions/$env_id/$method-seed$seed" "${recipe[@]}" "$@"
