"""Seconds a stage-2 step takes with the meta sampler against instance sampling, at recipes/balms_meta.yaml's shape:
a ResNet-32 frozen but for its head, batch 512 (meta batch 512), AutoAugment and Cutout, on generated 32x32 images
with CIFAR-10-LT IF 100's class counts (12,406). Both time main.py's own step (train.train_step) on batches from the
loader main.py builds (datasets.TensorLoader, wrapped in meta_sampler.MetaSampledLoader for the meta sampler).

    python tools/meta_sampler_cost.py [--steps 3]      # on the GPU where there is one, else the CPU
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets import TensorLoader, batch_augmentations, long_tail_counts  # noqa: E402
from losses import build_loss  # noqa: E402
from meta_sampler import MetaSampledLoader  # noqa: E402
from models import build_model  # noqa: E402
from optim import build_optimizer  # noqa: E402
from runtime import cpu_only, mixed_precision  # noqa: E402
from stage2 import Stage2Model  # noqa: E402
from train import train_step  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # recipes/balms.yaml's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    args = parser.parse_args()
    precision, _ = mixed_precision("fp16")
    accelerator = Accelerator(cpu=cpu_only(), mixed_precision=precision)
    device = accelerator.device
    counts = long_tail_counts(5000, 10, "exp", 100)
    targets = np.repeat(np.arange(10), counts)
    images = np.random.default_rng(0).integers(0, 256, (len(targets), 32, 32, 3), dtype=np.uint8)
    optimizer_cfg = OmegaConf.create({"name": "SGD", "lr": 0.1, "weight_decay": 5e-4, "classifier_lr": None,
                                      "params": {"momentum": 0.9, "nesterov": False}})
    for sampler in ("instance", "meta"):
        torch.manual_seed(0)
        model = Stage2Model(build_model("resnet32", 10, False, 32, "pytorch")[0], "retrain")
        model = model.to(memory_format=torch.channels_last)
        criterion = build_loss("BalancedSoftmax", counts).to(device)
        model, optimizer = accelerator.prepare(model, build_optimizer(optimizer_cfg, model))
        loader = TensorLoader(images, targets, 512, MEAN, STD, device=device, train=True, crop=True, flip=True,
                              augmentations=batch_augmentations(["AutoAugment", "Cutout"], 32, device, 128))
        if sampler == "meta":
            loader = MetaSampledLoader(loader, loader, accelerator.unwrap_model(model), optimizer, criterion,
                                       accelerator, counts, lr=0.01, meta_batch=512, init_pow=0.0, seed=0)
        model.train()
        batches, seconds = iter(loader), []
        for _ in range(args.steps + 1):
            began = time.perf_counter()
            x, y = next(batches)
            train_step(model, x, y, criterion, optimizer, accelerator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - began)
        print(f"{sampler}: {np.mean(seconds[1:]):.3f} s a step on {device}, {precision} (steps: "
              f"{', '.join(f'{s:.3f}' for s in seconds[1:])})", flush=True)


if __name__ == "__main__":
    main()
