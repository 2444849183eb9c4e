#!/usr/bin/env bash
# The paper's sweep: CIFAR-10-LT and CIFAR-100-LT x imbalance factor 1 10 50 100 200 x CE / Balanced Softmax
# (BS equals CE on balanced data, so IF 1 trains CE only), once per seed, then report.py over the results.
#
#   bash run.sh                                   # seed 0, the settings in configs.yaml
#   SEEDS="0 1 2" bash run.sh                     # three seeds side by side in each run folder
#   bash run.sh TRAIN.epochs 1 MODEL.name resnet32  # extra KEY VALUE pairs go to every run
#
# Environment: SEEDS, DATASETS, FACTORS, LOSSES (space-separated lists), CONFIG (default configs.yaml),
# SAVEDIR (default ./results), LAUNCH (default "python"; e.g. LAUNCH="torchrun --nproc_per_node 2" or
# LAUNCH="accelerate launch"). A run that already finished is skipped, an interrupted one resumes.
set -uo pipefail

SEEDS=${SEEDS:-0}
DATASETS=${DATASETS:-"CIFAR10LT CIFAR100LT"}
FACTORS=${FACTORS:-"1 10 50 100 200"}
LOSSES=${LOSSES:-"CrossEntropyLoss BalancedSoftmax"}
CONFIG=${CONFIG:-configs.yaml}
SAVEDIR=${SAVEDIR:-./results}
LAUNCH=${LAUNCH:-python}

failed=()
for seed in $SEEDS; do
  for dataset in $DATASETS; do
    for factor in $FACTORS; do
      for loss in $LOSSES; do
        if [ "$factor" = 1 ] && [ "$loss" = BalancedSoftmax ]; then
          continue
        fi
        echo "== dataset: $dataset, loss: $loss, IF: $factor, seed: $seed"
        if ! $LAUNCH main.py --config "$CONFIG" \
            DEFAULT.exp_name "$loss-IF_$factor" \
            DEFAULT.seed "$seed" \
            DEFAULT.savedir "$SAVEDIR" \
            DATASET.name "$dataset" \
            DATASET.imbalance_type exp \
            DATASET.imbalance_factor "$factor" \
            LOSS.name "$loss" \
            "$@"; then
          failed+=("$dataset $loss IF $factor seed $seed")
        fi
      done
    done
  done
done

python report.py "$SAVEDIR" || failed+=("report.py $SAVEDIR")
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
