"""train.py in one process: an epoch is the canonical loop and reports its images' mean loss and accuracy; gradient
accumulation ends with each epoch of the fast loader, as with accelerate's own loaders; the steps between two
reports never wait for the device; predictions keep every image; the checkpoint metric's direction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import nn

import train
from conftest import Batches
from datasets import TensorLoader
from errors import NonFiniteLossError
from optim import fuse_on

SIDE, CLASSES = 8, 4


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, CLASSES))


def tiny_loader(images: int, batch_size: int, device) -> TensorLoader:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(images, SIDE, SIDE, 3), dtype=np.uint8)
    targets = rng.integers(0, CLASSES, size=images).tolist()
    return TensorLoader(data, targets, batch_size, (0.5,) * 3, (0.25,) * 3, device=device, train=True, crop=True,
                        flip=True)


def prepared(accelerator: Accelerator):
    model = tiny_model().to(accelerator.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,  # fused as main.py builds it
                                fused=fuse_on(accelerator.device.type, accelerator.mixed_precision))
    return (*accelerator.prepare(model, optimizer), nn.CrossEntropyLoss().to(accelerator.device))


# 1. One epoch ---------------------------------------------------------------------------------------------------------

def test_an_epoch_steps_on_every_batch_and_reports_what_it_trained_on(fresh_accelerate):
    """train_one_epoch against the loop written out by hand: the same weights after it, and the mean loss and
    accuracy over the images, each batch scored before its own step (batches of 4, 4 and 2: weighted by size)."""
    generator = torch.Generator().manual_seed(0)
    batches = Batches((torch.randn(n, 3, SIDE, SIDE, generator=generator),
                       torch.randint(0, CLASSES, (n,), generator=generator)) for n in (4, 4, 2))
    model, reference = tiny_model(), tiny_model()
    by_hand = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    losses, correct = [], 0
    for images, targets in batches:
        outputs = reference(images)
        loss = nn.functional.cross_entropy(outputs, targets)
        losses.append(loss.item() * len(targets))
        correct += (outputs.argmax(1) == targets).sum().item()
        loss.backward()
        by_hand.step()
        by_hand.zero_grad()

    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)
    scores = train.train_one_epoch(model, batches, nn.CrossEntropyLoss(), optimizer, accelerator, 0, log_interval=2)
    assert scores["loss"] == pytest.approx(sum(losses) / 10, rel=1e-5)
    assert scores["acc"] == pytest.approx(correct / 10)
    assert scores["lr"] == 0.1
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)


def test_an_epoch_stops_at_the_first_report_of_a_non_finite_loss(fresh_accelerate):
    accelerator = Accelerator(cpu=True)
    model, optimizer, criterion = prepared(accelerator)
    images = torch.randn(4, 3, SIDE, SIDE)
    targets = torch.arange(4) % CLASSES
    batches = Batches([(images, targets)] * 4 + [(images * float("nan"), targets)] + [(images, targets)] * 3)
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan in epoch 3, step 6"):
        train.train_one_epoch(model, batches, criterion, optimizer, accelerator, 2, log_interval=3)


# 2. Gradient accumulation and the end of an epoch ---------------------------------------------------------------------

def test_accumulation_steps_on_each_epochs_last_partial_window(fresh_accelerate):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3)
    model, optimizer, criterion = prepared(accelerator)
    loader = tiny_loader(10, 2, accelerator.device)  # 5 batches: windows of 3 and 2
    assert len(loader) == 5
    steps = []
    optimizer.optimizer.register_step_post_hook(lambda *_: steps.append(epoch))
    for epoch in range(3):
        train.train_one_epoch(model, loader, criterion, optimizer, accelerator, epoch, log_interval=100)
        # the epoch's last, partial window stepped and cleared its gradients: none carry into the next epoch
        assert all(p.grad is None or not p.grad.any() for p in model.parameters()), f"epoch {epoch + 1}"
    assert [steps.count(epoch) for epoch in range(3)] == [2, 2, 2]


def test_accumulation_without_a_partial_window_is_unchanged(fresh_accelerate):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3)
    model, optimizer, criterion = prepared(accelerator)
    loader = tiny_loader(12, 2, accelerator.device)  # 6 batches: two whole windows
    steps = []
    optimizer.optimizer.register_step_post_hook(lambda *_: steps.append(epoch))
    for epoch in range(2):
        train.train_one_epoch(model, loader, criterion, optimizer, accelerator, epoch, log_interval=100)
    assert [steps.count(epoch) for epoch in range(2)] == [2, 2]


@pytest.mark.parametrize("accumulation, batches, steps", [(1, 5, 2), (3, 6, 1), (2, 5, 2)])
def test_an_epoch_stops_after_the_steps_asked_for(fresh_accelerate, accumulation, batches, steps):
    # TRAIN.iterations may end inside an epoch: the run's last epoch takes the steps left, each a whole window
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model, optimizer, criterion = prepared(accelerator)
    loader = tiny_loader(2 * batches, 2, accelerator.device)
    taken = []
    optimizer.optimizer.register_step_post_hook(lambda *_: taken.append(1))
    scores = train.train_one_epoch(model, loader, criterion, optimizer, accelerator, 0, log_interval=100, steps=steps)
    assert len(taken) == steps
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    assert 0 <= scores["acc"] <= 1


# 3. No host sync between reports --------------------------------------------------------------------------------------

# Calls that copy between host and device, and so wait for the device: on a CPU they cost nothing, so they are counted
HOST_TRIPS = {torch: ("tensor", "as_tensor"), torch.Tensor: ("item", "tolist", "cpu", "numpy", "__bool__", "__float__",
                                                            "__int__", "new_tensor")}


def count_host_trips(monkeypatch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for owner, names in HOST_TRIPS.items():
        for name in names:
            original = getattr(owner, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                counts[_name] = counts.get(_name, 0) + 1
                return _original(*args, **kwargs)
            monkeypatch.setattr(owner, name, counted)
    return counts


@pytest.mark.parametrize("accumulate", [1, 2])
def test_host_trips_do_not_grow_with_the_steps(fresh_accelerate, monkeypatch, accumulate):
    """An epoch of 3 steps and one of 9, both without a report in between, make the same host round trips: those
    of the epoch's closing summary only."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulate)
    model, optimizer, criterion = prepared(accelerator)
    short, long = tiny_loader(6, 2, accelerator.device), tiny_loader(18, 2, accelerator.device)
    assert (len(short), len(long)) == (3, 9)
    counts = count_host_trips(monkeypatch)
    trips = []
    for epoch, loader in enumerate((short, long)):
        counts.clear()
        train.train_one_epoch(model, loader, criterion, optimizer, accelerator, epoch, log_interval=100)
        trips.append(dict(counts))
    assert trips[0] == trips[1]
    assert sum(trips[0].values()) <= 3, trips[0]  # the closing reduce, its .tolist() and the finiteness check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: sync debug mode checks CUDA streams")
@pytest.mark.parametrize("precision", ["no", "bf16"])  # fp16's GradScaler syncs each step (optim.fuse_on)
def test_steps_between_reports_do_not_sync_on_cuda(fresh_accelerate, monkeypatch, precision):
    """Every report ends with the sync debug mode set to "error", and the next report sets it back before it
    syncs: the steps between two reports run checked. The first interval runs unchecked, as the epoch's permutation
    is copied to the device once, and the first kernels initialise cuDNN and cuBLAS."""
    accelerator = Accelerator(mixed_precision=precision)
    assert accelerator.device.type == "cuda"
    model, optimizer, criterion = prepared(accelerator)
    loader = tiny_loader(96, 8, accelerator.device)  # 12 steps: reports after steps 4, 8 and 12, then the summary
    reduce, check_finite, reports = accelerator.reduce, train._raise_if_not_finite, []

    def report_begins(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("default")
        return reduce(*args, **kwargs)

    def report_ends(*args, **kwargs):
        check_finite(*args, **kwargs)
        reports.append(torch.cuda.get_sync_debug_mode())
        torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(accelerator, "reduce", report_begins)
    monkeypatch.setattr(train, "_raise_if_not_finite", report_ends)
    try:
        train.train_one_epoch(model, loader, criterion, optimizer, accelerator, 0, log_interval=4)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(reports) == 4  # three reports and the closing summary: the checked steps ran


# Only fp16 drops steps: its GradScaler skips a step whose gradients overflowed. bf16 and fp32 have no scaler and
# drop none, and on a CPU accelerate runs fp16 without a scaler too: an overflow can be injected only on CUDA fp16.
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: only there does fp16 have a GradScaler")
def test_a_step_dropped_for_overflow_leaves_no_trace(fresh_accelerate):
    """The optimizer main.py builds for fp16: a step that overflowed (dropped by the GradScaler) leaves the weights
    as they were, and the next step changes them as that step alone would (fused SGD on torch 2.11 did not)."""
    weights = {}
    for overflow_first in (True, False):
        accelerator = Accelerator(mixed_precision="fp16")
        model, optimizer, criterion = prepared(accelerator)
        images = torch.randn(8, 3, SIDE, SIDE, device=accelerator.device)
        targets = torch.arange(8, device=accelerator.device) % CLASSES
        if overflow_first:
            before = [p.detach().clone() for p in model.parameters()]
            train.train_step(model, images.mul(1e30), targets, criterion, optimizer, accelerator)
            assert optimizer.step_was_skipped
            for untouched, was in zip(model.parameters(), before):
                torch.testing.assert_close(untouched.detach(), was, rtol=0, atol=0)
        train.train_step(model, images, targets, criterion, optimizer, accelerator)
        weights[overflow_first] = [p.detach().clone() for p in model.parameters()]
        assert all(torch.isfinite(p).all() for p in weights[overflow_first])
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    for after_overflow, alone in zip(weights[True], weights[False]):
        torch.testing.assert_close(after_overflow, alone)


# 4. Predictions and the checkpoint metric -----------------------------------------------------------------------------

class _ReusesItsOutput(nn.Module):
    """Overwrites and returns the same tensor on every call, as a model compiled with CUDA graphs does; its
    "images" are class indices, which it scores one-hot."""

    def __init__(self, batch: int, num_classes: int):
        super().__init__()
        self.register_buffer("out", torch.zeros(batch, num_classes))

    def forward(self, images):
        return self.out.copy_(nn.functional.one_hot(images, self.out.shape[1]))


def test_predict_keeps_each_batch_when_the_model_reuses_its_output_memory():
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 1, 1])
    loader = [(labels[i:i + 2], labels[i:i + 2]) for i in range(0, 8, 2)]
    logits, targets = train.predict(_ReusesItsOutput(2, 3), loader, Accelerator(cpu=True))
    assert torch.equal(targets, labels)
    assert torch.equal(logits.argmax(1), labels)


@pytest.mark.parametrize("metric, score, best, better", [
    ("loss", 0.5, 0.6, True), ("loss", 0.7, 0.6, False), ("loss", 0.6, 0.6, False), ("loss", 9.0, None, True),
    ("bcr", 0.7, 0.6, True), ("bcr", 0.5, 0.6, False), ("bcr", 0.6, 0.6, False), ("bcr", 0.0, None, True),
])
def test_loss_is_better_lower_and_every_other_metric_higher(metric, score, best, better):
    assert train.is_better(metric, score, best) is better
