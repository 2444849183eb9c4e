"""Optimizers and per-epoch learning-rate schedules, by config name."""
from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from config import ConfigError


def cosine_annealing(optimizer, epochs: int, t_mult: int = 1, eta_min: float = 0.0):
    """Cosine decay to `eta_min` over the run; with t_mult > 1, restarts with cycles growing t_mult-fold."""
    return lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=max(epochs, 1), T_mult=t_mult, eta_min=eta_min)


def multistep(optimizer, epochs: int, milestones: list[int] = (160, 180), gamma: float = 0.01):
    """Multiply the learning rate by `gamma` at each milestone epoch (the LDAM recipe: 160, 180, 0.01)."""
    return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def constant(optimizer, epochs: int):
    """Keep the learning rate fixed."""
    return lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}
SCHEDULERS = {"cosine_annealing": cosine_annealing, "multistep": multistep, "constant": constant}


def build_optimizer(cfg, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """`cfg` is the OPTIMIZER section; weight decay applies to every parameter, as in the CIFAR-LT recipes.
    `fused` (for a GPU) updates all parameters in one kernel, unless OPTIMIZER.params sets fused or foreach itself.
    Under fp16 loss scaling it also spares a host sync per step: the GradScaler reads its overflow flag with
    `.item()` before an unfused optimizer's step, while a fused one skips the update on the device."""
    params = dict(cfg.params)
    if fused and "fused" not in params and "foreach" not in params:
        params["fused"] = True
    try:
        return OPTIMIZERS[cfg.name](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **params)
    except (TypeError, ValueError) as error:  # e.g. OPTIMIZER.params '{momentum: abc}'
        raise ConfigError(f"OPTIMIZER {cfg.name} refused its settings: {error}") from None


def build_scheduler(cfg, optimizer, epochs: int):
    """`cfg` is the SCHEDULER section: its schedule after `warmup_epochs` of linear warm-up from lr/10."""
    params = dict(cfg.params)
    if cfg.sched_name == "multistep" and cfg.warmup_epochs:
        # milestones are epochs of the whole run (the LDAM recipe decays at 160 and 180 after 5 warm-up epochs);
        # the main schedule counts its epochs from the end of the warm-up
        params["milestones"] = [m - cfg.warmup_epochs for m in params.get("milestones", (160, 180))]
    try:
        main = SCHEDULERS[cfg.sched_name](optimizer, epochs - cfg.warmup_epochs, **params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"SCHEDULER {cfg.sched_name} refused its params: {error}") from None
    if not cfg.warmup_epochs:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=cfg.warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[cfg.warmup_epochs])
