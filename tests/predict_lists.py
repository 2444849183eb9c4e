"""`python tests/fake_cifar.py DATADIR predict_lists.py OUT MAIN_ARGS...`: the scores that main.py's evaluation
gives on the test split of a list benchmark, for fixed weights (a model drawn with seed 0, its BatchNorm statistics
set from seed 1), written by the main process to OUT/scores-<loader>-<processes>.json; once per loader, classic
and fast. The sharding tests run it under 1 and 2 processes and compare."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator

from config import check, load_config
from datasets import build_loaders, build_splits, image_side
from metrics import per_class_report, summarize
from models import build_model
from runtime import cpu_only
from train import predict


def main(argv: list[str]) -> None:
    out, args = Path(argv[0]), argv[1:]
    accelerator = Accelerator(cpu=cpu_only())
    for loader in ("classic", "fast"):
        cache = ["DATASET.cache_dir", str(out / f"cache{accelerator.num_processes}")] if loader == "fast" else []
        cfg = load_config(args[1], [*args[2:], "DATASET.loader", loader, *cache])
        check(cfg)
        splits = build_splits(cfg.DATASET, 0)
        loaders = build_loaders(cfg.DATASET, splits, 0, accelerator)
        num_per_cls = list(splits["train"].num_per_cls.values())
        torch.manual_seed(0)
        model, _ = build_model(cfg.MODEL.name, len(num_per_cls), False, image_side(splits["train"]))
        generator = torch.Generator().manual_seed(1)
        for module in model.modules():  # statistics unlike a fresh model's, so that the logits differ by image
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
        logits, targets = predict(model.to(accelerator.device), loaders["test"], accelerator)
        if accelerator.is_main_process:
            (out / f"scores-{loader}-{accelerator.num_processes}.json").write_text(json.dumps(
                {"test": summarize(logits, targets, num_per_cls), "targets": targets.tolist(),
                 "per_class": per_class_report(logits, targets, num_per_cls)}))
        accelerator.wait_for_everyone()
