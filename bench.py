"""Training throughput of this repository's data path against the seed's, on this machine: `python bench.py`.

Two pipelines train the same model (same architecture, fresh initialisation) in one process:

- reference: the seed's approach. A CIFAR-like dataset that hands out PIL images, per-image torchvision
  transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with worker
  processes, fp32, NCHW, batch 32;
- ours: what main.py runs by default. The uint8 split on the device in a TensorLoader (batched crop, flip and
  normalisation), a channels_last model, the precision main.py picks for TRAIN.mixed_precision fp16, driven through
  accelerate (prepare, the autocast it wraps around forward, accelerator.backward) by train.train_step, the very
  step that train.py's epoch runs, batch 128; `--compile MODE` compiles it as TRAIN.compile true with
  TRAIN.compile_mode MODE does.

`--stack 1,2,4,8` then also times K ResNet-32s trained as one module (models.stacked: grouped convolutions, so
the K models share each kernel launch) with ours's step, `train.train_step`, at K x --batch-size images a step (one
TensorLoader of that batch stands in for K runs' loaders: the same images to augment, one launch for all), and reports
their total train images/s and its ratio to ours (one model, one batch a step).

`--aug AutoAugment,Cutout` adds augmentations after crop and flip, to both pipelines: per image in the reference,
batched on the device in ours (datasets.augment), so the data measurements include them.

A timed step is the whole step: the next batch (with its augmentation) from the loader, forward, loss, backward and
optimizer step. Warm-up steps run first and are not timed. Each measurement runs whole steps until a time budget
(--seconds) is spent, or exactly --steps steps. Besides training, it measures the loaders alone and evaluation
(eval mode, no_grad, test batch size), and splits a training step into data time and compute time.

The data are random uint8 images (the content does not change the speed). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import TorchDynamoPlugin
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from config import COMPILE_MODES, load_config
from datasets import (CIFAR10LT, FAST_AUGMENTATIONS, TensorLoader, batch_augmentations, classic_loader,
                      classic_transform)
from losses import build_loss
from models import build_model
from models.stacked import FP16_REFUSED, StackedLoss, StackedResNet
from optim import build_optimizer, fuse_on
from runtime import mixed_precision
from train import train_step

ROOT = Path(__file__).resolve().parent
AUG = ("RandomCrop", "RandomHorizontalFlip")  # the seed's training augmentations, which both pipelines apply first
EXTRA_AUG = tuple(name for name in FAST_AUGMENTATIONS if name not in AUG)  # what --aug may add
SIZE = 32
MEAN, STD = CIFAR10LT.mean, CIFAR10LT.std


class RandomCIFAR(Dataset):
    """Random images stored as torchvision's CIFAR stores them (N x 32 x 32 x 3 uint8, int targets), and served
    as its __getitem__ does: a PIL image through `transform`, and the target."""

    def __init__(self, num_images: int, num_classes: int, seed: int = 0, transform=None) -> None:
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, size=(num_images, SIZE, SIZE, 3), dtype=np.uint8)
        self.targets = rng.integers(0, num_classes, size=num_images).tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.data[i])
        return (self.transform(image) if self.transform else image), self.targets[i]


def endless(loader):
    """Batches from `loader`, epoch after epoch, so that a measurement never runs out of data."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class Clock:
    """Wall-clock time on `device`: on CUDA it first waits for the queued kernels, so a reading covers the work
    issued before it. On a CPU the work is done when the call returns, and reading the clock costs nothing."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def measure(step, batches, *, clock: Clock, warmup: int, steps: int, seconds: float, split: bool) -> dict:
    """Run `warmup` untimed steps, then time whole steps: exactly `steps` of them if steps > 0, else as many as
    fit in `seconds` (at least one). A step takes a batch from `batches` and passes it to `step`, which may be None
    for the loader alone. With `split`, the clock is also read between getting the batch and computing on it,
    which gives the data time and the compute time of a step (on CUDA that adds a sync in every step)."""
    for _ in range(warmup):
        images, targets = next(batches)
        if step:
            step(images, targets)
    data_time = compute_time = 0.0
    count = images_seen = 0
    start = clock()
    # The budget check reads the host clock only, so that on CUDA the steps queue up as they do in training
    while (count < steps) if steps > 0 else (count == 0 or time.perf_counter() - start < seconds):
        before = clock() if split else 0.0
        images, targets = next(batches)
        if split:
            middle = clock()
            data_time += middle - before
        if step:
            step(images, targets)
        if split:
            compute_time += clock() - middle
        count += 1
        images_seen += len(targets)
    elapsed = clock() - start
    result = {"img_s": images_seen / elapsed, "steps": count, "images": images_seen, "seconds": elapsed}
    if split:
        result.update(data_s_per_step=data_time / count, compute_s_per_step=compute_time / count)
    return result


def reference_step(model, criterion, optimizer, device):
    """The seed's step: copy the CPU batch to the device, then fp32 forward, backward and step."""
    def step(images, targets):
        images, targets = images.to(device), targets.to(device)
        loss = criterion(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def our_step(model, criterion, optimizer, accelerator):
    """train.train_one_epoch's step itself, train.train_step: the prepared model (accelerate wraps its forward in
    autocast), accelerator.backward (which scales the loss under fp16), the accelerate-wrapped optimizer, and the
    batch's loss and accuracy sums left on the device."""
    def step(images, targets):
        train_step(model, images, targets, criterion, optimizer, accelerator)
    return step


def eval_step(model, device):
    """Evaluation as train.predict does it: eval mode, no autograd, logits as float."""
    @torch.no_grad()
    def step(images, targets):
        model(images.to(device)).float()
    return step


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def shipped_config():
    """configs.yaml's defaults (optimizer, loss, test batch size, workers), read when asked, not at import."""
    return load_config(ROOT / "configs.yaml")


def parse_args(argv):
    cfg = shipped_config()
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a build_model name (timm, or resnet32)")
    parser.add_argument("--batch-size", type=int, default=128, help="our training batch")
    parser.add_argument("--ref-batch-size", type=int, default=32, help="the reference's batch (the seed's 32)")
    parser.add_argument("--test-batch-size", type=int, default=None,
                        help=f"evaluation batch of both; default configs.yaml's {cfg.DATASET.test_batch_size} on "
                             "CUDA, 256 on a CPU (where one batch of 2048 alone would take most of the time budget)")
    parser.add_argument("--num-workers", type=int, default=cfg.DATASET.num_workers,
                        help="reference DataLoader workers (the seed used 12, configs.yaml has 2 for 2 cores)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="time budget of each training measurement; the loader-only and evaluation "
                             "measurements get a third of it")
    parser.add_argument("--steps", type=int, default=0, help="time exactly this many steps instead (0: --seconds)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps before each measurement (default 1 on a CPU, 3 on CUDA); with --compile, "
                             "ours first runs a whole pass of its loader untimed")
    parser.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    parser.add_argument("--precision", default=cfg.TRAIN.mixed_precision, choices=["fp16", "bf16", "no"],
                        help="requested as TRAIN.mixed_precision is; main.py's rule then picks what runs")
    parser.add_argument("--compile", default="no", choices=["no", *COMPILE_MODES],
                        help="torch.compile ours in this mode, as TRAIN.compile true with TRAIN.compile_mode does "
                             "(default no, as configs.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--images", type=int, default=5000, help="generated images")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--stack", default="", help="comma-separated numbers of ResNet-32s to time stacked in one "
                        "module, e.g. 1,2,4,8 (default none); with --model resnet32 only")
    parser.add_argument("--aug", default="", help="comma-separated augmentations after crop and flip, in both "
                        "pipelines, e.g. AutoAugment,Cutout (default none: the seed's)")
    args = parser.parse_args(argv)
    args.aug = [name for name in args.aug.split(",") if name]
    unknown = [name for name in args.aug if name not in EXTRA_AUG]
    if unknown:
        parser.error(f"--aug {unknown[0]}: choose from {', '.join(EXTRA_AUG)}")
    try:
        args.stack = [int(k) for k in args.stack.split(",") if k]
    except ValueError:
        parser.error(f"--stack {args.stack}: give whole numbers separated by commas, e.g. 1,2,4,8")
    if args.stack and args.model != "resnet32":
        parser.error(f"--stack: models.stacked stacks resnet32 only, not --model {args.model}")
    if any(k < 1 for k in args.stack) or max(args.stack, default=0) * args.batch_size > args.images:
        parser.error(f"--stack {','.join(map(str, args.stack))}: each K must be at least 1 and K x --batch-size at "
                     f"most --images ({args.images})")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible")
    if args.test_batch_size is None:
        args.test_batch_size = cfg.DATASET.test_batch_size if args.device == "cuda" else 256
    if args.warmup is None:
        args.warmup = 3 if args.device == "cuda" else 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args, cfg = parse_args(argv), shipped_config()
    began = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision, why = mixed_precision(args.precision, on_gpu=device.type == "cuda")
    if args.stack and precision == "fp16":
        sys.exit(f"error: --stack: {FP16_REFUSED}")
    clock = Clock(device)
    timing = dict(clock=clock, warmup=args.warmup, steps=args.steps)
    train_budget, short_budget = args.seconds, args.seconds / 3
    # On a CPU the clock reading inside a step is free, so the step split comes from the main measurement; on
    # CUDA it would add a sync per step, so there the split is a separate, extra measurement
    inline_split = device.type == "cpu"

    criterion = build_loss(cfg.LOSS.name, [args.images // args.classes] * args.classes).to(device)
    results: dict[str, dict] = {}

    def pipeline(name, model, step, train, data, test, train_timing: dict, eval_timing: dict) -> None:
        """One pipeline's measurements: train steps (and their data/compute split), the loader alone, evaluation."""
        model.train()
        results[f"{name}_train"] = measure(step, endless(train), seconds=train_budget, split=inline_split,
                                           **train_timing)
        if not inline_split:
            results[f"{name}_train"].update(split_of(measure(step, endless(train), seconds=short_budget,
                                                             split=True, **train_timing)))
        results[f"{name}_data"] = measure(None, data, seconds=short_budget, split=False, **timing)
        model.eval()
        results[f"{name}_eval"] = measure(eval_step(model, device), endless(test), seconds=short_budget, split=False,
                                          **eval_timing)

    # ---- reference: PIL images, per-image transforms in DataLoader workers, fp32 NCHW
    train_set = RandomCIFAR(args.images, args.classes, transform=classic_transform([*AUG, *args.aug], SIZE, MEAN, STD))
    test_set = RandomCIFAR(args.images, args.classes, transform=classic_transform([], SIZE, MEAN, STD))
    ref_train = classic_loader(train_set, args.ref_batch_size, args.num_workers, seed=0)
    ref_test = DataLoader(test_set, batch_size=args.test_batch_size, num_workers=args.num_workers,
                          persistent_workers=args.num_workers > 0)
    torch.manual_seed(0)
    ref_model, note = build_model(args.model, args.classes, False, SIZE)
    ref_model = ref_model.to(device)
    ref_optimizer = build_optimizer(cfg.OPTIMIZER, ref_model)

    print(f"{args.model} ({note or 'as built by timm'}) on {device} ({gpu_or_cpu(device)}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; ours runs precision {precision}{why}",
          flush=True)

    def to_device(batches):  # the reference's loader alone still ends with the copy to the device
        for images, targets in batches:
            yield images.to(device), targets.to(device)

    pipeline("ref", ref_model, reference_step(ref_model, criterion, ref_optimizer, device), ref_train,
             to_device(endless(ref_train)), ref_test, timing, timing)
    del ref_model, ref_optimizer, ref_train, ref_test  # stops the reference's worker processes

    # ---- ours: the split on the device, batched augmentation, channels_last, accelerate at main.py's precision
    compiled = TorchDynamoPlugin(backend="no" if args.compile == "no" else "inductor",
                                 mode="default" if args.compile == "no" else args.compile)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=precision, dynamo_plugin=compiled)
    our_train = TensorLoader(train_set.data, train_set.targets, args.batch_size, MEAN, STD, device=device,
                             train=True, crop=True, flip=True,
                             augmentations=batch_augmentations([*AUG, *args.aug], SIZE, device), seed=0)
    our_test = TensorLoader(test_set.data, test_set.targets, args.test_batch_size, MEAN, STD, device=device,
                            train=False)
    torch.manual_seed(0)
    model, _ = build_model(args.model, args.classes, False, SIZE)
    model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.OPTIMIZER, model, fuse_on(device.type, accelerator.mixed_precision))  # as main.py
    model, optimizer = accelerator.prepare(model, optimizer)

    # A compiled model compiles (and captures CUDA graphs) again for each new batch shape, the last, smaller batch
    # of a pass too: then a whole untimed pass comes first
    def compiled_warmup(loader) -> dict:
        return timing if args.compile == "no" else {**timing, "warmup": args.warmup + len(loader)}

    pipeline("ours", model, our_step(model, criterion, optimizer, accelerator), our_train, endless(our_train),
             our_test, compiled_warmup(our_train), compiled_warmup(our_test))

    # ---- stacked: K models in one module, prepared and stepped as ours; whole batches of K x batch-size only
    for k in args.stack:
        images = len(train_set.data) // (k * args.batch_size) * (k * args.batch_size)
        stack_train = TensorLoader(train_set.data[:images], train_set.targets[:images], k * args.batch_size, MEAN,
                                   STD, device=device, train=True, crop=True, flip=True,
                                   augmentations=batch_augmentations([*AUG, *args.aug], SIZE, device), seed=0)
        torch.manual_seed(0)
        stacked = StackedResNet.from_models([build_model(args.model, args.classes, False, SIZE)[0] for _ in range(k)])
        stacked = stacked.to(device, memory_format=torch.channels_last)
        stacked_optimizer = build_optimizer(cfg.OPTIMIZER, stacked, fuse_on(device.type, accelerator.mixed_precision))
        stacked, stacked_optimizer = accelerator.prepare(stacked, stacked_optimizer)
        stacked.train()
        results[f"stack{k}_train"] = measure(our_step(stacked, StackedLoss([criterion] * k), stacked_optimizer,
                                                      accelerator), endless(stack_train), seconds=train_budget,
                                             split=False, **compiled_warmup(stack_train))
        del stacked, stacked_optimizer

    report = summary(args, results, precision, device, time.perf_counter() - began)
    print_table(args, results, report)
    print(json.dumps(report))
    return report


def split_of(result: dict) -> dict:
    return {key: result[key] for key in ("data_s_per_step", "compute_s_per_step")}


def gpu_or_cpu(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def summary(args, results: dict, precision: str, device: torch.device, wall: float) -> dict:
    def ratio(stage: str) -> float:
        return results[f"ours_{stage}"]["img_s"] / results[f"ref_{stage}"]["img_s"]

    def split(name: str) -> dict:
        r = results[name]
        data, compute = r["data_s_per_step"], r["compute_s_per_step"]
        return {"data_s_per_step": data, "compute_s_per_step": compute, "data_fraction": data / (data + compute)}

    return {
        "baseline_img_s": results["ref_train"]["img_s"], "ours_img_s": results["ours_train"]["img_s"],
        "speedup": ratio("train"),
        "data_ref_img_s": results["ref_data"]["img_s"], "data_ours_img_s": results["ours_data"]["img_s"],
        "data_speedup": ratio("data"),
        "eval_ref_img_s": results["ref_eval"]["img_s"], "eval_ours_img_s": results["ours_eval"]["img_s"],
        "eval_speedup": ratio("eval"),
        "split_ours": split("ours_train"), "split_ref": split("ref_train"),
        "steps": {name: r["steps"] for name, r in results.items()},
        "model": args.model, "batch_size": args.batch_size, "ref_batch_size": args.ref_batch_size,
        "test_batch_size": args.test_batch_size, "num_workers": args.num_workers, "device": device.type,
        "device_name": gpu_or_cpu(device), "cpu": cpu_name(), "precision": precision, "compile": args.compile,
        "ref_precision": "no", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "aug": [*AUG, *args.aug], "images": args.images, "warmup": args.warmup, "seconds_per_measurement": args.seconds,
        "fixed_steps": args.steps, "wall_s": wall,
    } | ({"stacked": [stacked_figures(args, results, k) for k in args.stack]} if args.stack else {})


def stacked_figures(args, results: dict, k: int) -> dict:
    train_img_s = results[f"stack{k}_train"]["img_s"]  # all K models' images
    return {"models": k, "batch_per_model": args.batch_size, "img_s": train_img_s,
            "over_one_model": train_img_s / results["ours_train"]["img_s"]}


def print_table(args, results: dict, report: dict) -> None:
    rows = [("reference", "train step", "ref_train", None), ("ours", "train step", "ours_train", "speedup"),
            ("reference", "data only", "ref_data", None), ("ours", "data only", "ours_data", "data_speedup"),
            ("reference", "eval", "ref_eval", None), ("ours", "eval", "ours_eval", "eval_speedup")]
    batch = {"ref_train": args.ref_batch_size, "ours_train": args.batch_size, "ref_data": args.ref_batch_size,
             "ours_data": args.batch_size, "ref_eval": args.test_batch_size, "ours_eval": args.test_batch_size}
    print(f"\n{'pipeline':<10} {'stage':<11} {'batch':>6} {'steps':>6} {'images/s':>10} {'ours/ref':>9}")
    for pipeline, stage, key, ratio in rows:
        r = results[key]
        shown = f"{report[ratio]:.2f}x" if ratio else ""
        print(f"{pipeline:<10} {stage:<11} {batch[key]:>6} {r['steps']:>6} {r['img_s']:>10.1f} {shown:>9}")
    print("\nwhere a training step's time goes (data = getting the augmented batch onto the device, "
          "compute = forward, backward, optimizer step):")
    for pipeline, key in (("reference", "split_ref"), ("ours", "split_ours")):
        s = report[key]
        print(f"  {pipeline:<10} data {1000 * s['data_s_per_step']:9.1f} ms  compute "
              f"{1000 * s['compute_s_per_step']:9.1f} ms  per step  ({100 * s['data_fraction']:.1f}% data)")
    if args.stack:
        print(f"\nK ResNet-32s stacked in one module, {args.batch_size} images a model a step, against ours "
              "(one model):")
        for figures in report["stacked"]:
            print(f"  K = {figures['models']:<3} {figures['img_s']:10.1f} images/s  {figures['over_one_model']:.2f}x")
    print(f"\nreference: fp32 NCHW, {args.num_workers} DataLoader workers; ours: precision {report['precision']}, "
          f"channels_last, compile {report['compile']}; {report['device_name']}; whole run {report['wall_s']:.0f} s\n")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
