"""Optimizers and learning-rate schedules, by config name; a schedule steps per epoch or per optimizer step."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.optim import lr_scheduler

from errors import ConfigError


def cosine_annealing(optimizer, length: int, eta_min: float = 0.0):
    """Half a cosine from the lr down to `eta_min` over `length` epochs or steps, then `eta_min`: a run that
    lasts whole epochs may take a few steps past the schedule's end (TRAIN.iterations), and must not climb back."""
    def factor(base_lr: float):
        floor = eta_min / base_lr
        return lambda t: floor + (1 - floor) * (1 + math.cos(math.pi * min(t, length) / length)) / 2
    return lr_scheduler.LambdaLR(optimizer, [factor(group["lr"]) for group in optimizer.param_groups])


def multistep(optimizer, length: int, milestones: list[int] = (160, 180), gamma: float = 0.01):
    """Multiply the learning rate by `gamma` at each milestone (the LDAM recipe: epochs 160, 180, 0.01)."""
    return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def constant(optimizer, length: int):
    """Keep the learning rate fixed."""
    return lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)


OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}
SCHEDULERS = {"cosine_annealing": cosine_annealing, "multistep": multistep, "constant": constant}
INTERVALS = ("epoch", "step")


class RunLength(NamedTuple):
    """How long a run trains, how long its schedule is in the schedule's own unit (SCHEDULER.interval), and its
    optimizer steps where TRAIN.iterations counts them (None: every step of every epoch)."""
    epochs: int
    schedule: int
    steps: int | None = None


def run_length(cfg, steps_per_epoch: int) -> RunLength:
    """`cfg` is the whole config. TRAIN.iterations, when set, fixes the number of optimizer steps whatever the
    data set's size: the run's last epoch stops when they are taken, and a per-step schedule spans exactly them."""
    iterations = cfg.TRAIN.iterations
    epochs = math.ceil(iterations / steps_per_epoch) if iterations else cfg.TRAIN.epochs
    if cfg.SCHEDULER.interval == "epoch":
        return RunLength(epochs, epochs, iterations)
    return RunLength(epochs, iterations or epochs * steps_per_epoch, iterations)


def fuse_on(device_type: str, mixed_precision: str) -> bool:
    """Whether build_optimizer should fuse: on a GPU, except under fp16 loss scaling. There the fused SGD of
    torch 2.11 (H200, measured) does not skip cleanly a step that the GradScaler drops for overflowing: the next
    step's update came out wrong, and ResNet-32 weights turned NaN within 10 steps of CIFAR-10-LT. Unfused, the
    scaler reads its overflow flag with `.item()` before each step: one host sync per step, the price of fp16."""
    return device_type == "cuda" and mixed_precision != "fp16"


def build_optimizer(cfg, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """`cfg` is the OPTIMIZER section; weight decay applies to every trained parameter (a frozen one, in stage 2,
    is left out), as in the CIFAR-LT recipes.
    `fused` (see fuse_on) updates all parameters in one kernel, unless OPTIMIZER.params sets fused or foreach."""
    params = dict(cfg.params)
    if fused and "fused" not in params and "foreach" not in params:
        params["fused"] = True
    try:
        return OPTIMIZERS[cfg.name](param_groups(cfg, model), lr=cfg.lr, weight_decay=cfg.weight_decay, **params)
    except (TypeError, ValueError) as error:  # e.g. OPTIMIZER.params '{momentum: abc}'
        raise ConfigError(f"OPTIMIZER {cfg.name} refused its settings: {error}") from None


def param_groups(cfg, model: torch.nn.Module) -> list:
    """The trained parameters (a frozen one, in stage 2, is left out); with OPTIMIZER.classifier_lr, in two groups:
    the classifier's (`model.get_classifier()`) at that learning rate, the rest at OPTIMIZER.lr. Schedules scale
    every group alike."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if cfg.classifier_lr is None:
        return trained
    head = {id(p) for p in model.get_classifier().parameters()}
    groups = [{"params": [p for p in trained if id(p) not in head]},
              {"params": [p for p in trained if id(p) in head], "lr": cfg.classifier_lr}]
    return [group for group in groups if group["params"]]


def build_scheduler(cfg, optimizer, length: int):
    """`cfg` is the SCHEDULER section: `warmup` epochs or steps (its `interval`) of linear warm-up from
    lr x `warmup_start`, then its schedule, over `length` epochs or steps in all (RunLength.schedule)."""
    unit = "steps" if cfg.interval == "step" else "epochs"
    if cfg.warmup >= length:
        raise ConfigError(f"SCHEDULER.warmup {cfg.warmup} must be below the run's {length} {unit}: lower it, "
                          "or lengthen the run (TRAIN.epochs or TRAIN.iterations)")
    params = dict(cfg.params)
    if cfg.sched_name == "multistep" and cfg.warmup:
        # milestones count from the start of the run (the LDAM recipe decays at epochs 160 and 180 after its
        # warm-up); the main schedule counts from the end of the warm-up
        params["milestones"] = [m - cfg.warmup for m in params.get("milestones", (160, 180))]
    try:
        main = SCHEDULERS[cfg.sched_name](optimizer, length - cfg.warmup, **params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"SCHEDULER {cfg.sched_name} refused its params: {error}") from None
    if not cfg.warmup:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=cfg.warmup_start, total_iters=cfg.warmup)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[cfg.warmup])
