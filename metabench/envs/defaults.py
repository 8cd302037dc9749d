"""Default settings that the registered ids pin and their env classes take as defaults.

They live apart from the env modules, which import torch, so that registering the ids (``import metabench``)
stays light: ``metabench --help`` and ``gym.make``'s registry need no tensor library.
"""

# MetaAugment (v0, v1): 5 sub-policies, 4 augmented copies of every support image, 32 tasks per step
AUGMENT_SUB_POLICIES = 5
AUGMENT_COPIES = 4
AUGMENT_TASKS_PER_STEP = 32
AUGMENT_TEMPERATURE = 50.0

# MetaAugment v2: ProtoNets trained on the augmented episodes of a data-poor split, scored on val
AUGMENT_TRAINING_CLASSES = 100
AUGMENT_TRAINING_EPISODES = 300
AUGMENT_TRAINING_WAY = 20
AUGMENT_TRAINING_QUERY = 5
AUGMENT_TRAINING_VAL_EPISODES = 200

#: MetaNAS: meta-training episodes per candidate. Conv-4 trains at about 0.4 s per 60-way episode on the 2-core
#: CPU with 2 threads (benchmarks/results/training/cpu-budget-protonet-5w1s), so about 40 s plus the val scoring; a
#: random architecture costs 0.38x Conv-4's FLOPs on average, the costliest 8.9x (benchmarks/results/nas/README.md).
NAS_FIDELITY = 100
NAS_VAL_EPISODES = 100
#: MetaNAS: meta-training episodes of the test protocol: Conv-4 reaches 97.4% val accuracy at 500 and 97.6% at 656
#: (5-way 1-shot, runs/v1 ProtoNets seed 1), so 500 is near convergence for it at a cost a CPU can pay.
NAS_TEST_TRAIN_EPISODES = 500
