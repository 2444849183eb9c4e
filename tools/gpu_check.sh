#!/usr/bin/env bash
# Issue 10's GPU check, prepared as one command per phase for a lent GPU machine (the device tool), where it
# starts with its working tree and nothing else. Each phase fits one call of under 10 minutes:
#
#   bash tools/gpu_check.sh ldam    # recipes/ldam_200ep.yaml, CE and Balanced Softmax at once (about 7 min)
#   bash tools/gpu_check.sh speed   # the CUDA-only tests, then summed train images/s of 1, 4 and 8 concurrent
#                                   # ResNet-32 runs, eager and with CUDA graphs (about 3 min)
#   bash tools/gpu_check.sh balms   # recipes/balms.yaml, CE and Balanced Softmax at once (longer: own budget)
#   SMOKE=1 bash tools/gpu_check.sh ldam   # a few steps of a phase, to check this script (a CPU will do)
#
# device tool: run(command="bash tools/gpu_check.sh ldam", carry=["data/c10lt-if100-jpeg.tar", "data/wheels"])
#
# Data: data/c10lt-if100-jpeg.tar (35 MB, never committed) holds CIFAR-10-LT IF 100 of the JPEG copy of CIFAR-10
# (../shared/data/README.md) as ImageFolderLT folders: train/ (12,280 images: the split that CIFAR10LT draws with
# DEFAULT.data_seed 0 and DATASET.val_per_class 50), val/ (50 a class, held out of the training images) and
# test/ (all 10,000), the original JPEG bytes. So these runs train on exactly the images of the CPU check, and
# select their checkpoint on the same validation split. data/wheels holds omegaconf, which the GPU image lacks.
# What comes back in $OUT: the report (report.md, report.csv) and the run logs, or the throughput table.
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:?usage: bash tools/gpu_check.sh ldam|speed|balms}
PYTHON=${PYTHON:-python3}
WORK=/tmp/gpu_check/$phase  # runs, checkpoints and logs; a few files of it are copied to $OUT at the end
OUT=${OUT:-/tmp/gpu_check/out}  # the device tool brings back at most 8 files from its $OUT
DATA=${DATA:-/tmp/c10lt-if100}
SMOKE=${SMOKE:-0}
LIMIT=${LIMIT:-560}  # seconds a training phase may take before its runs are stopped (they keep their checkpoints)
mkdir -p "$WORK" "$OUT"

"$PYTHON" -c "import omegaconf" 2>/dev/null ||
  "$PYTHON" -m pip install -q --no-index --find-links data/wheels omegaconf || exit 1
if [ ! -d "$DATA/train" ]; then
  mkdir -p "$DATA" && tar -xf data/c10lt-if100-jpeg.tar -C "$DATA" || exit 1
fi
FACTOR=100
short=()
if [ "$SMOKE" = 1 ]; then  # 30 training images a class at IF 2, 2 epochs
  for split in train:30 val:5 test:10; do
    for folder in "$DATA/${split%:*}"/*/; do
      mkdir -p "$DATA-smoke/${split%:*}/$(basename "$folder")"
      ls "$folder" | head -n "${split#*:}" | while read -r f; do cp "$folder/$f" "$DATA-smoke/${split%:*}/$(basename "$folder")/"; done
    done
  done
  DATA=$DATA-smoke FACTOR=2
  short=(TRAIN.epochs 2 SCHEDULER.warmup 1 TRAIN.iterations null SCHEDULER.interval epoch DATASET.batch_size 32)
fi

train() {  # $1: recipe name; CE and Balanced Softmax at once through run.sh, each stopped after LIMIT seconds
  RECIPE=recipes/$1.yaml DATASETS=ImageFolderLT FACTORS=$FACTOR JOBS=2 SAVEDIR="$WORK/results" PYTHON="$PYTHON" \
    LAUNCH="timeout $LIMIT $PYTHON" bash run.sh DATASET.datadir "$DATA" DATASET.img_size 32 DATASET.download false \
    TRAIN.wandb.use false "${short[@]}" > "$WORK/run.log" 2>&1
  echo "run.sh exit status $?" >> "$WORK/run.log"
  "$PYTHON" report.py "$WORK/results" --out "$WORK" >> "$WORK/run.log" 2>&1
  cp "$WORK"/run.log "$WORK"/report.md "$WORK"/report.csv "$WORK"/results/logs/*.log "$OUT"/ 2>/dev/null
  tail -n 30 "$WORK/run.log"; head -n 40 "$WORK/report.md" 2>/dev/null
}

speed() {  # the CUDA-only tests, then N concurrent main.py runs of a few epochs each, for N = 1, 4, 8
  "$PYTHON" -m pytest -q -rs -k "cuda or gpu or sync" tests/ > "$WORK/cuda_tests.log" 2>&1
  tail -n 5 "$WORK/cuda_tests.log"
  local epochs=4
  [ "$SMOKE" = 1 ] && epochs=2
  for compile in false true; do
    for n in 1 4 8; do
      for i in $(seq "$n"); do
        timeout 240 "$PYTHON" main.py --config configs.yaml --config recipes/ldam_200ep.yaml DATASET.name ImageFolderLT \
          DATASET.datadir "$DATA" DATASET.img_size 32 TRAIN.wandb.use false DEFAULT.savedir "$WORK/speed" \
          DEFAULT.exp_name "compile_$compile-$n-$i" TRAIN.epochs "$epochs" SCHEDULER.warmup 1 \
          TRAIN.compile "$compile" TRAIN.compile_mode "$([ $compile = true ] && echo reduce-overhead || echo default)" \
          > "$WORK/speed-$compile-$n-$i.log" 2>&1 &
      done
      wait
      # images/s of a run: its training images over its fastest epoch after the first (compiling, warming up)
      "$PYTHON" - "$WORK" "$compile" "$n" <<'PY' | tee -a "$WORK/throughput.md"
import re, sys
from pathlib import Path
work, compile_, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rates = []
for log in sorted(work.glob(f"speed-{compile_}-{n}-*.log")):
    text = log.read_text().replace("\r", "\n")
    images = re.search(r"(\d+) training images", text)
    times = [float(t) for t in re.findall(r"^epoch (?:[2-9]|\d\d+)/\d+ .*\| ([\d.]+) s$", text, re.M)]
    if images and times:
        rates.append(int(images.group(1)) / min(times))
mode = "reduce-overhead" if compile_ == "true" else "eager"
print(f"| {mode} | {n} | {len(rates)} of {n} | {sum(rates):,.0f} | {(sum(rates) / max(len(rates), 1)):,.0f} |")
PY
    done
  done
  cp "$WORK"/throughput.md "$WORK"/cuda_tests.log "$WORK"/speed-true-8-1.log "$OUT"/ 2>/dev/null
}

case $phase in
  ldam) train ldam_200ep ;;
  balms) train balms ;;
  speed) echo "| compile | runs | finished | summed train images/s | per run |" > "$WORK/throughput.md"
         echo "|---|---|---|---|---|" >> "$WORK/throughput.md"
         speed ;;
  *) echo "unknown phase $phase: ldam | speed | balms" >&2; exit 2 ;;
esac
