#!/usr/bin/env bash
# The MetaNAS experiments as run (2-core CPU sandbox shared with other jobs; 1 thread per process, nice 10).
# Search at reduced fidelity: 20 meta-training episodes of 20-way ProtoNets per candidate, 50 val tasks.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ENV=MetaNAS-Omniglot-5w1s-v0
KW=(fidelity=20 val_episodes=50 'learner_config={"train_way": 20}' cache_dir=runs/nas-search/cache)
# the three searches ran side by side as three processes, sharing the on-disk result cache
nice -n 10 metabench search random --env $ENV --evaluations 30 --seeds 0 1 2 --env-kwargs mode=oneshot "${KW[@]}" \
  --out runs/nas-search/random
nice -n 10 metabench search evolution --env $ENV --evaluations 30 --seeds 0 1 2 --env-kwargs mode=oneshot "${KW[@]}" \
  --config population=10 sample=3 --out runs/nas-search/evolution
nice -n 10 metabench search reinforce --env $ENV --evaluations 30 --seeds 0 1 2 --env-kwargs mode=sequential "${KW[@]}" \
  --out runs/nas-search/reinforce
# the plug-in RL example: SB3 PPO on the sequential mode, 30 architectures (360 decisions), one seed
nice -n 10 python -m baselines.ppo --env $ENV --timesteps 360 --seed 0 --out runs/nas-search/ppo \
  --env-kwargs mode=sequential "${KW[@]}" --config n_steps=60 batch_size=60 ent_coef=0.01
metabench search-plot runs/nas-search/random runs/nas-search/evolution runs/nas-search/reinforce \
  --out benchmarks/results/nas/best_so_far.png --csv benchmarks/results/nas/summary.csv \
  --title "MetaNAS-Omniglot-5w1s-v0, fidelity 20 (20-way), 50 val tasks"
# the best architecture found (evolution, seed 0) and Conv-4, ProtoNets for 300 s each (run side by side), then test
BEST=dilconv3x3-64-none,dilconv3x3-64-avgpool,skip-64-none,conv3x3-64-maxpool
nice -n 10 metabench train protonet --env MetaOmniglot-5w1s-v0 --time-budget 300 --config architecture=$BEST \
  --out runs/nas-final/best
nice -n 10 metabench train protonet --env MetaOmniglot-5w1s-v0 --time-budget 300 --out runs/nas-final/conv4
for run in best conv4; do
  nice -n 10 metabench evaluate --agent protonet --checkpoint runs/nas-final/$run/checkpoint.pt --env MetaOmniglot-5w1s-v0
done
