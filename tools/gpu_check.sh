#!/usr/bin/env bash
# The GPU checks, prepared as one command per phase for a lent GPU machine (the device tool), where it starts with
# its working tree and nothing else. Each phase fits one call of under 10 minutes:
#
#   bash tools/gpu_check.sh pack    # HERE, before the call: the data below, from a lossless CIFAR-10 (CIFAR=DIR)
#   bash tools/gpu_check.sh ldam    # recipes/ldam_200ep.yaml, CE and Balanced Softmax, each selected on the
#                                   # validation split and on the test set: 4 runs at once (about 8 min)
#   bash tools/gpu_check.sh speed   # the CUDA-only tests, then summed train images/s of 1, 2, 4 and 8 ResNet-32s
#                                   # stacked in one process (bench.py --stack, batch 512 a model) and of 1, 4 and 8
#                                   # concurrent runs, each eager and with CUDA graphs (not yet timed as a whole,
#                                   # likely over one call: PARTS="tests stacked", then PARTS=jobs, in two calls)
#   bash tools/gpu_check.sh balms   # recipes/balms.yaml, the same 4 runs (longer: own budget)
#   SMOKE=1 bash tools/gpu_check.sh ldam   # a few steps of a phase, to check this script (a CPU will do)
#
# device tool: run(command="bash tools/gpu_check.sh ldam", carry=["data/c10lt-if100-png.tar.gz", "data/wheels"])
#
# Data: data/c10lt-if100-png.tar.gz (50 MB, never committed), written by the pack phase from a lossless copy of
# CIFAR-10 in torchvision's format (../shared/data/README.md), as ImageFolderLT folders of PNG files: train/
# (CIFAR-10-LT IF 100 as CIFAR10LT draws it with DEFAULT.data_seed 0 and DATASET.val_per_class 50: 12,280 images,
# 4,950 down to 49 a class), val/ (those 50 a class) and test/ (all 10,000). The runs selected on the test set
# train on the same train/ without val/. data/wheels holds omegaconf, which the GPU image lacks.
# What comes back in $OUT: the reports (report-val.md: selected on val/; report-test.md: selected on the test set,
# the literature's protocol, with the last epoch beside it) and the run logs, or the throughput table.
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:?usage: bash tools/gpu_check.sh pack|ldam|speed|balms}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu_check/$phase}  # runs, checkpoints and logs; a few files of it are copied to $OUT at the end
OUT=${OUT:-/tmp/gpu_check/out}  # the device tool brings back at most 8 files from its $OUT
DATA=${DATA:-/tmp/c10lt-if100}
SMOKE=${SMOKE:-0}
LIMIT=${LIMIT:-560}  # seconds a training phase may take before its runs are stopped (they keep their checkpoints)
PARTS=${PARTS:-tests stacked jobs}  # what the speed phase measures
mkdir -p "$WORK" "$OUT"

TAR=data/c10lt-if100-png.tar.gz  # gzip: plain tar pads each of the 22,780 small files to 1 KB or more (65 MiB)

if [ "$phase" = pack ]; then  # on the machine that holds CIFAR-10 (CIFAR=DIR, as DATASET.datadir)
  : "${CIFAR:?set CIFAR to the folder that holds cifar-10-batches-py}"
  rm -rf "$WORK/folders"
  "$PYTHON" - "$CIFAR" "$WORK/folders" <<'PY' || exit 1
import sys
from pathlib import Path
from PIL import Image
sys.path[:0] = [".", "tests"]
from fake_cifar import accept_files_in  # a lossless copy was written anew: its md5 differs from the original's
from datasets import CIFAR10LT
cifar, out = sys.argv[1:]
accept_files_in(CIFAR10LT.roots(cifar)[0])
for split in ("train", "val", "test"):
    data = CIFAR10LT.in_datadir(cifar, split=split, imb_type="exp", imbalance_factor=100, val_per_class=50, seed=0)
    for i, (image, label) in enumerate(zip(data.data, data.targets)):
        folder = Path(out) / split / f"{label}_{data.classes[label]}"  # sorted names keep CIFAR's class order
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    print(split, len(data), list(data.num_per_cls.values()))
PY
  mkdir -p data && tar -czf "$TAR" -C "$WORK/folders" train val test && ls -l "$TAR"
  exit
fi

"$PYTHON" -c "import omegaconf" 2>/dev/null ||
  "$PYTHON" -m pip install -q --no-index --find-links data/wheels omegaconf || exit 1
needs_data=1
[ "$phase" = speed ] && [[ " $PARTS " != *" jobs "* ]] && needs_data=0  # bench.py generates its images
if [ "$needs_data" = 1 ] && [ ! -d "$DATA/train" ]; then
  mkdir -p "$DATA" && tar -xzf "$TAR" -C "$DATA" || exit 1
fi
FACTOR=100
short=()
if [ "$SMOKE" = 1 ] && [ "$needs_data" = 1 ]; then  # 30 training images a class at IF 2, 2 epochs
  for split in train:30 val:5 test:10; do
    for folder in "$DATA/${split%:*}"/*/; do
      mkdir -p "$DATA-smoke/${split%:*}/$(basename "$folder")"
      ls "$folder" | head -n "${split#*:}" | while read -r f; do cp "$folder/$f" "$DATA-smoke/${split%:*}/$(basename "$folder")/"; done
    done
  done
  DATA=$DATA-smoke FACTOR=2
  short=(TRAIN.epochs 2 SCHEDULER.warmup 1 TRAIN.iterations null SCHEDULER.interval epoch DATASET.batch_size 32)
fi

train() {  # $1: recipe name; CE and Balanced Softmax, selected on val/ and on the test set (the same data without
           # val/), 4 runs at once through run.sh, each stopped after LIMIT seconds
  mkdir -p "$DATA-noval" && ln -sfn "$DATA/train" "$DATA-noval/train" && ln -sfn "$DATA/test" "$DATA-noval/test"
  for select in val test; do
    local data=$DATA
    [ "$select" = test ] && data=$DATA-noval
    RECIPE=recipes/$1.yaml DATASETS=ImageFolderLT FACTORS=$FACTOR JOBS=2 SAVEDIR="$WORK/results-$select" \
      PYTHON="$PYTHON" LAUNCH="timeout $LIMIT $PYTHON" bash run.sh DATASET.datadir "$data" DATASET.img_size 32 \
      DATASET.download false TRAIN.wandb.use false "${short[@]}" > "$WORK/run-$select.log" 2>&1 &
  done
  wait
  for select in val test; do
    "$PYTHON" report.py "$WORK/results-$select" --out "$WORK/report-$select" >> "$WORK/run-$select.log" 2>&1
    cp "$WORK/report-$select/report.md" "$OUT/report-$select.md" 2>/dev/null
    cp "$WORK/report-$select/report.csv" "$OUT/report-$select.csv" 2>/dev/null
    cp "$WORK/run-$select.log" "$OUT"/ 2>/dev/null
    tail -n 15 "$WORK/run-$select.log"; head -n 40 "$WORK/report-$select/report.md" 2>/dev/null
  done
}

stacked() {  # $1: compile false|true. K = 1, 2, 4, 8 ResNet-32s stacked in one module (models.stacked), timed by
             # bench.py beside one model (ours), batch 512 a model; its JSON line becomes rows of throughput.md
  local mode=no sizes=(--batch-size 512 --images 50000 --seconds 4 --num-workers 12) stack=1,2,4,8
  [ "$1" = true ] && mode=reduce-overhead
  [ "$SMOKE" = 1 ] && sizes=(--batch-size 8 --images 256 --steps 2 --num-workers 0) stack=1,2
  # compiling takes most of it: ours's train and eval steps and each K's step, each its own graph
  timeout "$([ "$1" = true ] && echo 420 || echo 200)" "$PYTHON" bench.py --model resnet32 --compile "$mode" \
    --stack "$stack" "${sizes[@]}" > "$WORK/stacked-$1.log" 2>&1
  tail -n 8 "$WORK/stacked-$1.log"
  "$PYTHON" - "$WORK/stacked-$1.log" "$mode" <<'PY' | tee -a "$WORK/throughput.md"
import json, sys
log, mode = sys.argv[1:]
try:
    report = json.loads(open(log).read().strip().splitlines()[-1])
except (ValueError, IndexError):
    sys.exit(print(f"| {mode}, stacked in 1 process | 1, 2, 4, 8 | 0 (see {log}) | | |"))
mode = "eager" if mode == "no" else mode
one = f"batch {report['batch_size']} a model, {report['precision']}"
print(f"| {mode}, 1 model in 1 process (bench.py, {one}) | 1 | 1 of 1 | {report['ours_img_s']:,.0f} | "
      f"{report['ours_img_s']:,.0f} |")
for row in report["stacked"]:
    k = row["models"]
    print(f"| {mode}, stacked in 1 process (bench.py, {one}; {row['over_one_model']:.2f}x 1 model) | {k} | "
          f"{k} of {k} | {row['img_s']:,.0f} | {row['img_s'] / k:,.0f} |")
PY
  cp "$WORK"/throughput.md "$WORK/stacked-$1.log" "$OUT"/ 2>/dev/null  # a phase stopped later keeps these
}

speed() {  # the CUDA-only tests, then for eager and CUDA graphs: K stacked models in one process, K = 1, 2, 4, 8,
           # and N concurrent main.py runs of a few epochs each, N = 1, 4, 8
  if [[ " $PARTS " = *" tests "* ]]; then
    "$PYTHON" -m pytest -q -rs -k "cuda or gpu or sync" tests/ > "$WORK/cuda_tests.log" 2>&1
    tail -n 5 "$WORK/cuda_tests.log"
  fi
  local epochs=4
  [ "$SMOKE" = 1 ] && epochs=2
  for compile in false true; do
    [[ " $PARTS " = *" stacked "* ]] && stacked "$compile"
    [[ " $PARTS " = *" jobs "* ]] || continue
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
  *) echo "unknown phase $phase: pack | ldam | speed | balms" >&2; exit 2 ;;
esac
