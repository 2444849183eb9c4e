"""One training step, one training epoch (a dict of floats) and the predictions of one evaluation pass."""
from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from errors import NonFiniteLossError
from mixup import MixedTargets

# Metrics that can select the best checkpoint; all but loss are higher-is-better
CHECKPOINT_METRICS = ("bcr", "acc", "f1", "auroc", "loss")


class Predictions(NamedTuple):
    """Logits and targets of every image of a split, gathered from all processes."""
    logits: torch.Tensor
    targets: torch.Tensor


def is_better(metric: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score < best if metric == "loss" else score > best


def train_step(model, images, targets, criterion, optimizer, accelerator) -> torch.Tensor:
    """One batch: forward, loss, backward, and the optimizer step when it closes an accumulation window.
    Returns the batch's loss sum and correct predictions, left on the device: nothing here waits for it.
    `targets` may be a mixed batch's two labels (mixup.MixedTargets)."""
    with accelerator.accumulate(model):
        outputs = model(images)
        loss = criterion(outputs, targets)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    return torch.stack([loss.detach().float() * len(images), correct(outputs, targets)])


def correct(outputs: torch.Tensor, targets: torch.Tensor | MixedTargets) -> torch.Tensor:
    """The batch's correct predictions; of a mixed batch, lam of a hit on the first label plus 1 - lam of one on the
    second (BagofTricks-LT's training accuracy under mixup), lam being Remix's own for each image."""
    predicted = outputs.argmax(1)
    if isinstance(targets, MixedTargets):
        return (targets.lam * (predicted == targets.a) + (1 - targets.lam) * (predicted == targets.b)).sum().float()
    return (predicted == targets).sum().float()


def train_one_epoch(model, loader, criterion, optimizer, accelerator, epoch: int, log_interval: int,
                    scheduler=None, steps: int | None = None, mixup=None) -> dict[str, float]:
    """`scheduler`, if given, steps after every optimizer step taken (SCHEDULER.interval step); "lr" is the last
    step's. `steps`, if given, ends the epoch after that many optimizer steps (TRAIN.iterations ending inside it).
    `optimizer` is prepared by accelerate. `mixup` (a mixup.Mixup), if given, mixes every augmented batch on the
    device before the step, as timm's training loop applies its mixup_fn."""
    model.train()
    loader.set_epoch(epoch)
    totals = torch.zeros(2, device=accelerator.device)  # loss sum and correct, kept on the device
    window = torch.zeros(1, device=accelerator.device)  # loss sum since the last report
    # image counts are known on the host: a count built on the device each step would be a host-to-device copy
    seen = window_seen = 0
    batches = len(loader) if steps is None else min(len(loader), steps * accelerator.gradient_accumulation_steps)
    progress = tqdm(loader, desc=f"epoch {epoch + 1}", total=batches, disable=not accelerator.is_main_process,
                    leave=False)
    for step, (images, targets) in enumerate(progress, 1):
        if mixup is not None:
            images, targets = mixup(images, targets)
        sums = train_step(model, images, targets, criterion, optimizer, accelerator)
        lr = optimizer.param_groups[0]["lr"]
        # not after a step that the fp16 GradScaler skipped for overflowing, as accelerate's own scheduler wrapper
        if scheduler is not None and accelerator.sync_gradients and not optimizer.step_was_skipped:
            scheduler.step()
        totals += sums
        window += sums[:1]
        seen, window_seen = seen + len(images), window_seen + len(images)
        if step % log_interval == 0:
            loss_sum, images_seen = _reduce(accelerator, window, window_seen)  # note: a host sync, once per interval
            _raise_if_not_finite(loss_sum, epoch, step)
            progress.set_postfix(loss=f"{loss_sum / images_seen:.4f}")
            window.zero_()
            window_seen = 0
        if step == batches < len(loader):  # TRAIN.iterations ends inside this epoch; else the loader ends it
            break
    progress.close()
    loss_sum, hits, seen = _reduce(accelerator, totals, seen)
    _raise_if_not_finite(loss_sum, epoch, step)
    return {"loss": loss_sum / seen, "acc": hits / seen, "lr": lr}


def _reduce(accelerator, sums: torch.Tensor, seen: int) -> list[float]:
    """`sums` and the image count `seen`, each summed over the processes, on the host."""
    return accelerator.reduce(torch.cat([sums, sums.new_full((1,), seen)]), "sum").tolist()


def _raise_if_not_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not torch.isfinite(torch.tensor(loss_sum)):
        raise NonFiniteLossError(
            f"training loss is {loss_sum} in epoch {epoch + 1}, step {step}; the last good checkpoint is kept. "
            "Lower OPTIMIZER.lr, add SCHEDULER.warmup, or try TRAIN.mixed_precision no")


@torch.no_grad()
def predict(model, loader, accelerator) -> Predictions:
    """Logits and targets of every image in `loader`'s split, gathered from all processes, each image once."""
    model.eval()
    logits, targets = [], []
    for images, labels in loader:
        # always a copy (one, also from fp16): a model compiled with CUDA graphs (TRAIN.compile_mode
        # reduce-overhead) reuses its output memory
        logits.append(model(images).to(torch.float32, copy=True))
        targets.append(labels)
    logits = torch.cat(logits) if logits else torch.zeros(0, 0, device=accelerator.device)
    targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=accelerator.device)
    # Shards differ in length by at most one image: pad, gather, then drop the padding (target -1)
    logits = accelerator.pad_across_processes(logits, dim=0)
    targets = accelerator.pad_across_processes(targets, dim=0, pad_index=-1)
    logits, targets = accelerator.gather(logits), accelerator.gather(targets)
    keep = targets >= 0
    return Predictions(logits[keep], targets[keep])

