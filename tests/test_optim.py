"""optim.py: the optimizer (fused or not), the learning-rate schedules with warm-up, and the run's length."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import Batches
from config import load_config
from errors import ConfigError
from optim import RunLength, build_optimizer, build_scheduler, fuse_on, run_length

CONFIG = Path(__file__).resolve().parents[1] / "configs.yaml"


# ---------------------------------------------------------------- optimizer

def _cfg(*overrides: str):
    return load_config(CONFIG, list(overrides))


def test_sgd_from_the_shipped_config():
    model = nn.Linear(4, 3)
    optimizer = build_optimizer(_cfg().OPTIMIZER, model)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.1 and group["momentum"] == 0.9 and group["weight_decay"] == 0.0005
    assert group["nesterov"] is False
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in model.parameters())  # weight decay on every parameter


def test_sgd_overrides_are_honoured():
    cfg = _cfg("OPTIMIZER.lr", "0.05", "OPTIMIZER.weight_decay", "2e-4", "OPTIMIZER.params.nesterov", "true",
               "OPTIMIZER.params.momentum", "0.8")
    group = build_optimizer(cfg.OPTIMIZER, nn.Linear(4, 3)).param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == pytest.approx(2e-4)
    assert group["momentum"] == 0.8 and group["nesterov"] is True


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adam"])
def test_fused_on_request_unless_the_config_chooses(name):
    def group(fused, *overrides):
        cfg = _cfg("OPTIMIZER.name", name, "OPTIMIZER.params", "{}", *overrides)
        return build_optimizer(cfg.OPTIMIZER, nn.Linear(4, 3), fused=fused).param_groups[0]

    assert group(True)["fused"] is True
    assert not group(False)["fused"]
    assert group(True, "OPTIMIZER.params", "{foreach: true}")["fused"] is not True
    assert group(True, "OPTIMIZER.params", "{fused: false}")["fused"] is False


@pytest.mark.parametrize("device, precision, fused", [
    ("cuda", "no", True), ("cuda", "bf16", True), ("cuda", "fp16", False), ("cpu", "no", False), ("cpu", "bf16", False)])
def test_fused_only_on_a_gpu_without_fp16_loss_scaling(device, precision, fused):
    # fused SGD under the fp16 GradScaler went NaN on torch 2.11 (optim.fuse_on; on a GPU, tests/test_train.py
    # test_a_step_dropped_for_overflow_leaves_no_trace)
    assert fuse_on(device, precision) is fused


def test_fused_sgd_steps_as_the_unfused_one():
    # the fused kernel runs on a CPU too: same momentum and weight-decay update as the default implementation
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        optimizer = build_optimizer(_cfg().OPTIMIZER, model, fused=fused)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.ones(2, 4)).square().sum().backward()
            optimizer.step()
        weights.append(model.weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


def test_sgd_step_uses_momentum_and_weight_decay():
    # one parameter, gradient 1: first step v = g + wd * w, w -= lr * v; second step v = m * v + g + wd * w
    weight = nn.Parameter(torch.tensor([2.0]))
    model = nn.Module()
    model.w = weight
    cfg = _cfg("OPTIMIZER.lr", "0.1", "OPTIMIZER.weight_decay", "0.5", "OPTIMIZER.params", "{momentum: 0.9}")
    optimizer = build_optimizer(cfg.OPTIMIZER, model)
    w, v = 2.0, 0.0
    for step in range(2):
        optimizer.zero_grad()
        weight.grad = torch.tensor([1.0])
        optimizer.step()
        g = 1.0 + 0.5 * w
        v = g if step == 0 else 0.9 * v + g
        w -= 0.1 * v
        assert weight.item() == pytest.approx(w, rel=1e-6)


def test_adamw_with_replaced_params():
    cfg = _cfg("OPTIMIZER.name", "AdamW", "OPTIMIZER.lr", "0.001", "OPTIMIZER.params", "{betas: [0.8, 0.95]}")
    optimizer = build_optimizer(cfg.OPTIMIZER, nn.Linear(4, 3))
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.001 and tuple(group["betas"]) == (0.8, 0.95) and group["weight_decay"] == 0.0005


# ---------------------------------------------------------------- schedules

def _lrs(cfg, epochs: int, lr: float = 0.1, schedule: int | None = None) -> list[float]:
    """The learning rate each epoch (or step) trains with, read before its scheduler.step(); the schedule is
    `schedule` long (default: `epochs`)."""
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, schedule or epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _cosine(lr: float, eta_min: float, k: int, period: int) -> float:
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * k / period)) / 2


def test_cosine_decays_to_eta_min_over_the_run():
    epochs, eta_min = 50, 1e-5
    lrs = _lrs(_cfg(), epochs)  # shipped config: cosine_annealing, eta_min 1e-5, no warm-up
    assert lrs == pytest.approx([_cosine(0.1, eta_min, e, epochs) for e in range(epochs)], rel=1e-6)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # one cycle over the whole run: the last epoch is one cosine step from eta_min, no restart before the end
    assert lrs[-1] - eta_min == pytest.approx((0.1 - eta_min) * (1 - math.cos(math.pi / epochs)) / 2, rel=1e-6)
    assert lrs[-1] < 2e-4


def test_cosine_eta_min_override():
    lrs = _lrs(_cfg("SCHEDULER.params.eta_min", "0.01"), 10)
    assert lrs == pytest.approx([_cosine(0.1, 0.01, e, 10) for e in range(10)], rel=1e-6)
    assert min(lrs) > 0.01


def test_warmup_then_cosine_over_the_remaining_epochs():
    epochs, warmup, eta_min = 12, 3, 1e-3
    cfg = _cfg("SCHEDULER.warmup", str(warmup), "SCHEDULER.params.eta_min", str(eta_min))
    lrs = _lrs(cfg, epochs)
    # linear warm-up from lr/10: 0.01, 0.04, 0.07, then the cosine from 0.1 over the 9 remaining epochs
    assert lrs[:warmup] == pytest.approx([0.1 * (0.1 + 0.9 * e / warmup) for e in range(warmup)], rel=1e-6)
    expected = [_cosine(0.1, eta_min, k, epochs - warmup) for k in range(epochs - warmup)]
    assert lrs[warmup:] == pytest.approx(expected, rel=1e-6)


def test_multistep_milestones():
    cfg = _cfg("SCHEDULER.sched_name", "multistep", "SCHEDULER.params", "{milestones: [3, 6], gamma: 0.1}")
    lrs = _lrs(cfg, 8)
    assert lrs == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 2, rel=1e-6)


def test_multistep_milestones_are_epochs_of_the_run_with_warmup():
    # the LDAM recipe: 5 warm-up epochs, then x0.01 at epoch 160 and again at 180 (epochs of the whole run)
    cfg = _cfg("SCHEDULER.sched_name", "multistep", "SCHEDULER.warmup", "5",
               "SCHEDULER.params", "{milestones: [160, 180], gamma: 0.01}")
    lrs = _lrs(cfg, 200)
    assert lrs[:5] == pytest.approx([0.1 * (0.1 + 0.9 * e / 5) for e in range(5)], rel=1e-6)
    assert lrs[5:160] == pytest.approx([0.1] * 155, rel=1e-6)
    assert lrs[160:180] == pytest.approx([1e-3] * 20, rel=1e-6)
    assert lrs[180:] == pytest.approx([1e-5] * 20, rel=1e-6)


def test_constant_with_warmup():
    cfg = _cfg("SCHEDULER.sched_name", "constant", "SCHEDULER.params", "{}", "SCHEDULER.warmup", "2")
    assert _lrs(cfg, 5) == pytest.approx([0.01, 0.055, 0.1, 0.1, 0.1], rel=1e-6)


def test_scheduler_state_round_trips_for_resume():
    cfg = _cfg("SCHEDULER.warmup", "2")
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, 10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state, lr_now = scheduler.state_dict(), optimizer.param_groups[0]["lr"]
    # main.py's order: build both afresh, then load the optimizer's state and the scheduler's
    optimizer2 = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler2 = build_scheduler(cfg.SCHEDULER, optimizer2, 10)
    optimizer2.load_state_dict(optimizer.state_dict())
    scheduler2.load_state_dict(state)
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(lr_now)
    for _ in range(3):
        optimizer.step(), scheduler.step()
        optimizer2.step(), scheduler2.step()
        assert optimizer2.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_build_scheduler_reads_a_plain_section():
    section = OmegaConf.create({"sched_name": "multistep", "interval": "epoch", "warmup": 0, "warmup_start": 0.1,
                                "params": {"milestones": [1], "gamma": 0.5}})
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(section, optimizer, 3)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == [1.0, 0.5, 0.5]


def test_cosine_is_one_cycle_and_stays_at_eta_min_past_its_end():
    # no restarts (the removed t_mult never restarted either): a run of whole epochs that covers TRAIN.iterations
    # takes a few steps past the schedule's end, which must not climb back up
    lrs = _lrs(_cfg("SCHEDULER.params.eta_min", "0.001"), 14, schedule=10)
    assert lrs[:10] == pytest.approx([_cosine(0.1, 0.001, e, 10) for e in range(10)], rel=1e-6)
    assert lrs[10:] == pytest.approx([0.001] * 4, rel=1e-6)


def test_warmup_start_sets_the_first_learning_rate():
    # the LDAM recipe's warm-up: lr x (epoch + 1) / 5 for epochs 0-4 is a ramp from 0.2 x lr over 4 epochs
    cfg = _cfg("SCHEDULER.sched_name", "constant", "SCHEDULER.params", "{}", "SCHEDULER.warmup", "4",
               "SCHEDULER.warmup_start", "0.2")
    assert _lrs(cfg, 6) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1], rel=1e-6)


def test_a_warmup_as_long_as_the_run_is_refused():
    cfg = _cfg("SCHEDULER.warmup", "10")
    with pytest.raises(ConfigError, match="SCHEDULER.warmup 10 must be below the run's 10 epochs"):
        build_scheduler(cfg.SCHEDULER, torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), 10)


@pytest.mark.parametrize("overrides, steps_per_epoch, expected", [
    ([], 7, RunLength(epochs=50, schedule=50)),
    (["SCHEDULER.interval", "step"], 7, RunLength(epochs=50, schedule=350)),
    # BALMS: 13,000 steps whatever the data set's size, in the whole epochs that cover them
    (["TRAIN.iterations", "13000", "SCHEDULER.interval", "step"], 23, RunLength(epochs=566, schedule=13000,
                                                                              steps=13000)),
    (["TRAIN.iterations", "13000"], 25, RunLength(epochs=520, schedule=520, steps=13000)),
    # a run shorter than an epoch stops inside it
    (["TRAIN.iterations", "20", "SCHEDULER.interval", "step"], 97, RunLength(epochs=1, schedule=20, steps=20)),
])
def test_run_length_in_epochs_and_in_the_schedules_unit(overrides, steps_per_epoch, expected):
    assert run_length(_cfg(*overrides), steps_per_epoch) == expected


@pytest.mark.parametrize("overrides, section", [
    (["OPTIMIZER.params", "{momentum: abc}"], "OPTIMIZER"),
    (["SCHEDULER.sched_name", "multistep", "SCHEDULER.params", "{milestones: 5, gamma: 0.1}"], "SCHEDULER"),
])
def test_values_the_optimizer_or_scheduler_refuse_are_config_errors(overrides, section):
    cfg = _cfg(*overrides)
    with pytest.raises(ConfigError, match=section) as error:
        optimizer = build_optimizer(cfg.OPTIMIZER, nn.Linear(4, 3))
        build_scheduler(cfg.SCHEDULER, optimizer, length=10)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_per_step_schedule_steps_once_per_optimizer_step_in_train_one_epoch(accumulate):
    from accelerate import Accelerator

    from train import train_one_epoch
    cfg = _cfg("SCHEDULER.interval", "step", "SCHEDULER.warmup", "2", "SCHEDULER.params.eta_min", "0.0")
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulate)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = build_optimizer(cfg.OPTIMIZER, model)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, 12)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(0)
    batches = Batches((torch.randn(4, 3, 2, 2, generator=generator), torch.arange(4) % 3) for _ in range(6))
    scores = train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, accelerator, 0, 2, scheduler)
    steps = 6 // accumulate
    assert scheduler.last_epoch == steps
    # the reported lr is the one the epoch's last optimizer step used: warm-up 0.01, 0.055, then the cosine
    used = [0.01, 0.055] + [_cosine(0.1, 0.0, k, 10) for k in range(10)]
    assert scores["lr"] == pytest.approx(used[steps - 1], rel=1e-6)


class _GradientOverflowsAt(nn.CrossEntropyLoss):
    """Cross-entropy whose gradient is infinite on the `at`-th call, as fp16 gradients are when they overflow; the
    loss itself stays finite, as it does then."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, outputs, targets):
        self.calls += 1
        if self.calls == self.at:
            outputs.register_hook(lambda grad: grad * float("inf"))
        return super().forward(outputs, targets)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_per_step_schedule_waits_for_a_step_the_grad_scaler_skipped(fresh_accelerate, accumulate):
    """Under fp16 the GradScaler skips a step whose gradients overflow; the schedule does not advance on it, as
    accelerate's own scheduler wrapper does not. accelerate makes a GradScaler on GPUs only: here a CPU one."""
    from accelerate import Accelerator

    from train import train_one_epoch
    cfg = _cfg("SCHEDULER.interval", "step", "SCHEDULER.warmup", "2", "SCHEDULER.params.eta_min", "0.0")
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulate)
    accelerator.scaler = torch.amp.GradScaler("cpu")
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = build_optimizer(cfg.OPTIMIZER, model)
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, 12)
    model, optimizer = accelerator.prepare(model, optimizer)
    taken = []
    optimizer.optimizer.register_step_post_hook(lambda *_: taken.append(1))
    generator = torch.Generator().manual_seed(0)
    batches = Batches((torch.randn(4, 3, 2, 2, generator=generator), torch.arange(4) % 3) for _ in range(6))
    scores = train_one_epoch(model, batches, _GradientOverflowsAt(3), optimizer, accelerator, 0, 2, scheduler)
    steps = 6 // accumulate - 1  # the window of the third batch overflowed
    assert len(taken) == steps and accelerator.scaler.get_scale() == 2.0 ** 15  # one skip halved the scale
    assert scheduler.last_epoch == steps
    # the epoch's last step used the lr of the schedule's step `steps`: warm-up 0.01, 0.055, then the cosine
    used = [0.01, 0.055] + [_cosine(0.1, 0.0, k, 10) for k in range(10)]
    assert scores["lr"] == pytest.approx(used[steps - 1], rel=1e-6)


def test_classifier_lr_puts_the_head_in_its_own_group_and_schedules_scale_both():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    model.get_classifier = lambda: model[1]
    cfg = _cfg("OPTIMIZER.lr", "0.001", "OPTIMIZER.classifier_lr", "0.1", "SCHEDULER.sched_name", "multistep",
               "SCHEDULER.params", "{milestones: [1], gamma: 0.1}")
    optimizer = build_optimizer(cfg.OPTIMIZER, model)
    body, head = optimizer.param_groups
    assert body["lr"] == 0.001 and head["lr"] == 0.1
    assert {id(p) for p in head["params"]} == {id(p) for p in model[1].parameters()}
    assert {id(p) for p in body["params"]} == {id(p) for p in model[0].parameters()}
    assert body["weight_decay"] == head["weight_decay"] == 0.0005
    scheduler = build_scheduler(cfg.SCHEDULER, optimizer, 3)
    optimizer.step()
    scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.0001, 0.01])
    model[0].requires_grad_(False)  # stage 2: the frozen body leaves no empty group
    (only,) = build_optimizer(cfg.OPTIMIZER, model).param_groups
    assert only["lr"] == 0.1


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true"])
def test_a_classifier_lr_that_is_not_a_positive_number_is_refused(value):
    from config import check

    with pytest.raises(ConfigError, match="OPTIMIZER.classifier_lr must be a number > 0"):
        check(_cfg("OPTIMIZER.classifier_lr", value))
