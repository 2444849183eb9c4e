#!/usr/bin/env bash
# The paper's sweep: CIFAR-10-LT and CIFAR-100-LT x imbalance factor 1 10 50 100 200 x CE / Balanced Softmax
# (BS equals CE on balanced data, so IF 1 trains CE only), once per seed, then report.py over the results.
# The list benchmarks (DATASETS=ImageNetLT, PlacesLT, iNat2018) have one imbalance each, their train list's:
# FACTORS does not apply, each loss runs once per seed, and without a RECIPE each takes its own recipe
# (recipes/imagenet_lt_resnet10.yaml, recipes/places_lt_stage1.yaml, recipes/inat2018_resnet50.yaml).
#
#   bash run.sh                                   # seed 0, the settings in configs.yaml
#   RECIPE=recipes/balms.yaml bash run.sh         # a published recipe (recipes/*.yaml) merged over configs.yaml;
#                                                 # its runs go to <loss>-IF_<k>-balms, apart from other recipes'
#   SEEDS="0 1 2" bash run.sh                     # three seeds side by side in each run folder
#   bash run.sh TRAIN.epochs 1 MODEL.name resnet32  # extra KEY VALUE pairs go to every run
#   DATASETS=ImageNetLT bash run.sh DATASET.datadir /imagenet  # CE and BS over the ImageNet-LT recipe
#   JOBS=4 bash run.sh                            # 4 runs at once on this machine; each run's output goes to
#                                                 # SAVEDIR/logs/<data set>-<run folder>-seed<s>.log
#   sbatch --array=0-7 run.sh                     # SLURM: 8 array tasks share the sweep (submit from this folder)
#
# On CIFAR the runs follow the protocol of the README's table: LDAM-DRW's draw of the training images (DATASET.draw
# ldam, seeded by the run's seed) and the checkpoint selected on 50 validation images a class from outside it
# (DATASET.val_per_class 50). `bash run.sh DATASET.val_per_class 0` selects on the test set instead (the results say
# "test bcr"), `DATASET.draw torch` draws this repository's own subset.
#
# Each run's folder (DEFAULT.exp_name) is <loss>-IF_<k>, followed by -<recipe> with a RECIPE (its file name without
# .yaml), so that the sweeps of two recipes never share a folder; on a list benchmark it is <loss>-<recipe>. It is
# the name main.py gives a run without DEFAULT.exp_name. SEEDS, DATASETS, FACTORS and LOSSES are checked first.
#
# Environment: SEEDS, DATASETS, FACTORS, LOSSES (space-separated lists), CONFIG (default configs.yaml), RECIPE
# (an overlay file passed as a second --config; default none), SAVEDIR (default ./results), PYTHON (the
# interpreter of main.py and report.py, default python), LAUNCH (default "$PYTHON"; e.g. LAUNCH="torchrun
# --nproc_per_node 2" or LAUNCH="accelerate launch"), JOBS (runs at once, default 1: one after the other, output
# to the terminal). With JOBS > 1 each run gets OMP_NUM_THREADS = max(1, cores / JOBS) unless OMP_NUM_THREADS is
# set. A run that already finished is skipped, an interrupted one resumes; a failed run does not stop the others,
# and all failures are listed at the end (exit status 1).
#
# Under a SLURM job array, run i of the sweep (in the order of the loops below) goes to the array task
# i mod SLURM_ARRAY_TASK_COUNT, counting tasks from the array's first id: every run runs once over all the tasks.
# The tasks do not run report.py (none knows when the others end); each prints the command that reports on them
# all. With one SAVEDIR on a shared file system that is `python report.py SAVEDIR`; with a SAVEDIR per task
# (e.g. SAVEDIR=results/task$SLURM_ARRAY_TASK_ID), `python report.py results/task*` merges them. A job that waits
# for the array can run it: sbatch --dependency=afterany:<array job id> --wrap "python report.py results".
# Concurrent runs (JOBS or SLURM) must find the data in DATASET.datadir already: they would download it at once.
set -uo pipefail

# Unset: the default; set, even to nothing, the value given
SEEDS=${SEEDS-0}
DATASETS=${DATASETS-"CIFAR10LT CIFAR100LT"}
FACTORS=${FACTORS-"1 10 50 100 200"}
LOSSES=${LOSSES-"CrossEntropyLoss BalancedSoftmax"}
CONFIG=${CONFIG:-configs.yaml}
RECIPE=${RECIPE:-}
SAVEDIR=${SAVEDIR:-./results}
PYTHON=${PYTHON:-python}
LAUNCH=${LAUNCH:-$PYTHON}
JOBS=${JOBS:-1}
TASKS=${SLURM_ARRAY_TASK_COUNT:-1}
TASK=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))

if ! [[ $JOBS =~ ^[1-9][0-9]*$ ]]; then
  echo "error: JOBS=$JOBS must be a whole number >= 1" >&2
  exit 2
fi
# Every word of the sweep's lists, checked before the first run starts: one bad word would fail every run alike.
# The choices are configs.yaml's DATASET.name and LOSS.name.
check_words() {  # $1: the variable's name, $2: its value, $3: a pattern each word must match, $4: what it must be
  if [ -z "${2// /}" ]; then
    echo "error: $1 is empty: give it $4, or unset it for the default" >&2
    exit 2
  fi
  for word in $2; do
    if ! [[ $word =~ $3 ]]; then
      echo "error: $1 holds '$word': each word must be $4" >&2
      exit 2
    fi
  done
}
check_words SEEDS "$SEEDS" '^[0-9]+$' "a seed, a whole number >= 0"
check_words DATASETS "$DATASETS" '^(CIFAR10LT|CIFAR100LT|ImageFolderLT|ImageNetLT|PlacesLT|iNat2018)$' \
  "one of CIFAR10LT, CIFAR100LT, ImageFolderLT, ImageNetLT, PlacesLT, iNat2018"
check_words FACTORS "$FACTORS" '^[1-9][0-9]*([.][0-9]+)?$' "an imbalance factor, a number >= 1"
check_words LOSSES "$LOSSES" '^(CrossEntropyLoss|BalancedSoftmax|LDAM|Focal|LogitAdjusted)$' "CrossEntropyLoss, BalancedSoftmax, LDAM, Focal or LogitAdjusted"
if [ "$TASK" -lt 0 ] || [ "$TASK" -ge "$TASKS" ]; then
  echo "error: array task $SLURM_ARRAY_TASK_ID is not among $TASKS consecutive ids: use sbatch --array=0-K" >&2
  exit 2
fi
# A list benchmark's own recipe, used when RECIPE is unset; nothing for CIFAR and ImageFolderLT
own_recipe() {
  case $1 in
    ImageNetLT) echo recipes/imagenet_lt_resnet10.yaml ;;
    PlacesLT) echo recipes/places_lt_stage1.yaml ;;
    iNat2018) echo recipes/inat2018_resnet50.yaml ;;
  esac
}
if [ "$JOBS" -gt 1 ]; then
  # JOBS processes with a thread per core each would fight over the cores
  threads=$(( $(nproc) / JOBS ))
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 1 ? threads : 1 ))}
  mkdir -p "$SAVEDIR/logs"
fi
extra=("$@")
failures=$(mktemp)  # one line per failed run; background jobs cannot append to this shell's arrays
trap 'rm -f "$failures"' EXIT

launch() {  # $1: the run's label; then its KEY VALUE pairs (the --config files are the loop's `configs`)
  local label=$1
  shift
  $LAUNCH main.py "${configs[@]}" "$@" "${extra[@]}" || { echo "$label" >> "$failures"; return 1; }
}

i=-1
for seed in $SEEDS; do
  for dataset in $DATASETS; do
    recipe=${RECIPE:-$(own_recipe "$dataset")}
    configs=(--config "$CONFIG")
    suffix=""  # tells the run folders of one recipe from another's
    if [ -n "$recipe" ]; then
      configs+=(--config "$recipe")
      suffix=-$(basename "$recipe" .yaml)
    fi
    factors=$FACTORS
    if [ -n "$(own_recipe "$dataset")" ]; then
      factors=listed  # one imbalance: the train list's
    fi
    for factor in $factors; do
      for loss in $LOSSES; do
        if [ "$factor" = 1 ] && [ "$loss" = BalancedSoftmax ]; then
          continue
        fi
        i=$(( i + 1 ))
        if [ $(( i % TASKS )) -ne "$TASK" ]; then
          continue  # another array task's run
        fi
        label="$dataset $loss IF $factor seed $seed"
        name="$loss-IF_$factor$suffix"
        header="dataset: $dataset, loss: $loss, IF: $factor, seed: $seed"
        imbalance=(DATASET.imbalance_type exp DATASET.imbalance_factor "$factor")
        protocol=()  # the table's, on CIFAR: LDAM-DRW's draw, 50 validation images a class from outside it
        case $dataset in
          CIFAR10LT|CIFAR100LT) protocol=(DATASET.draw ldam DATASET.val_per_class 50) ;;
        esac
        if [ "$factor" = listed ]; then
          label="$dataset $loss seed $seed"
          header="dataset: $dataset, loss: $loss, seed: $seed"
          name="$loss$suffix"
          imbalance=()
        fi
        args=(DEFAULT.exp_name "$name" DEFAULT.seed "$seed" DEFAULT.savedir "$SAVEDIR"
              DATASET.name "$dataset" "${imbalance[@]}" "${protocol[@]}" LOSS.name "$loss")
        if [ "$JOBS" = 1 ]; then
          echo "== $header"
          launch "$label" "${args[@]}"
          continue
        fi
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
          wait -n
        done
        log="$SAVEDIR/logs/$dataset-$name-seed$seed.log"
        echo "== started: $label (log: $log)"
        { launch "$label" "${args[@]}" > "$log" 2>&1 && echo "== finished: $label" ||
            echo "== FAILED: $label (log: $log)"; } &
      done
    done
  done
done
wait

mapfile -t failed < "$failures"
if [ -n "${SLURM_ARRAY_TASK_COUNT:-}" ]; then
  echo "array task $TASK of $TASKS done; once every task is done: $PYTHON report.py $SAVEDIR (or several folders)"
else
  "$PYTHON" report.py "$SAVEDIR" || failed+=("report.py $SAVEDIR")
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
