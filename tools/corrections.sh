#!/usr/bin/env bash
# Every correction of a long-tailed model on one backbone (docs/reproducing.md, "Every correction on one
# backbone"): for each seed, post-hoc logit adjustment and tau-normalisation of the Cross-Entropy checkpoint (tau
# chosen on validation), then the stage-2 runs one at a time: cRT, LWS and Balanced Softmax re-training from the
# Cross-Entropy run, cRT from the Balanced Softmax run; then report.py over the stage-1 and stage-2 runs.
#
#   STAGE1=results/CIFAR10LT/resnet32 SEEDS="0 1" bash tools/corrections.sh [KEY VALUE ...]
#
# STAGE1 holds the stage-1 run folders stage1-CrossEntropyLoss/ and stage1-BalancedSoftmax/ (DEFAULT.exp_name
# stage1-LOSS), trained with the recipe RECIPE and the data settings given as KEY VALUE pairs (the same pairs here).
# OUT (default: results-corrections) receives the post-hoc results, the stage-2 runs and the report. EPOCHS sets
# every stage-2 run's length (default: each recipe's own; bs_retrain's 2,000 iterations become EPOCHS epochs).
# LAUNCH prefixes every python command (e.g. "python tests/fake_cifar.py DATA" for the lossless copy).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STAGE1:?set STAGE1 to the folder holding stage1-CrossEntropyLoss/ and stage1-BalancedSoftmax/}"
SEEDS=${SEEDS:-0}
RECIPE=${RECIPE:-recipes/ldam_200ep.yaml}
OUT=${OUT:-results-corrections}
LAUNCH=${LAUNCH:-python}
LA_TAUS=0,0.25,0.5,0.75,1,1.25,1.5,1.75,2
NORM_TAUS=0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2  # the decoupling code's sweep

stage2() {  # RECIPE2 FROM NAME SEED [KEY VALUE ...]
  local recipe=$1 from=$2 name=$3 seed=$4
  shift 4
  local length=()
  if [ -n "${EPOCHS:-}" ]; then
    length=(TRAIN.epochs "$EPOCHS")
    [ "$recipe" = bs_retrain ] && length+=(TRAIN.iterations null)
  fi
  $LAUNCH main.py --config configs.yaml --config "$RECIPE" --config "recipes/$recipe.yaml" "$@" \
    DEFAULT.seed "$seed" DEFAULT.savedir "$OUT" DEFAULT.exp_name "$name" \
    TRAIN.stage2_from "$STAGE1/stage1-$from" "${length[@]}"
}

for seed in $SEEDS; do
  $LAUNCH evaluate.py "$STAGE1/stage1-CrossEntropyLoss/model-seed${seed}-best.pt" \
    --out "$OUT/posthoc/stage1-CrossEntropyLoss" --logit-adjust "$LA_TAUS" --tau-norm "$NORM_TAUS"
  stage2 crt CrossEntropyLoss CE-cRT "$seed" "$@"
  stage2 lws CrossEntropyLoss CE-LWS "$seed" "$@"
  stage2 bs_retrain CrossEntropyLoss CE-BSretrain "$seed" "$@"
  stage2 crt BalancedSoftmax BS-cRT "$seed" "$@"
done
$LAUNCH report.py "$STAGE1" "$OUT" --out "$OUT/report"
