"""One training epoch and one evaluation, each returning a dict of floats."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from metrics import summarize

# Metrics that can select the best checkpoint; all but loss are higher-is-better
CHECKPOINT_METRICS = ("bcr", "acc", "f1", "auroc", "loss")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint stays in place."""


def is_better(metric: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score < best if metric == "loss" else score > best


def train_one_epoch(model, loader, criterion, optimizer, accelerator, epoch: int, log_interval: int,
                    scheduler=None) -> dict[str, float]:
    """`scheduler`, if given, steps after every optimizer step (SCHEDULER.interval step); "lr" is the last step's."""
    model.train()
    loader.set_epoch(epoch)
    totals = torch.zeros(3, device=accelerator.device)  # loss sum, correct, images: kept on the device
    window = torch.zeros(2, device=accelerator.device)  # loss sum and images since the last report
    progress = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not accelerator.is_main_process, leave=False)
    for step, (images, targets) in enumerate(progress, 1):
        with accelerator.accumulate(model):
            outputs = model(images)
            loss = criterion(outputs, targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None and accelerator.sync_gradients:
            scheduler.step()
        batch = torch.stack([loss.detach().float() * len(targets), torch.tensor(len(targets), device=loss.device)])
        window += batch
        totals += torch.cat([batch[:1], (outputs.argmax(1) == targets).sum().view(1), batch[1:]])
        if step % log_interval == 0:
            loss_sum, seen = accelerator.reduce(window, "sum").tolist()  # note: a host sync, once per interval
            _raise_if_not_finite(loss_sum, epoch, step)
            progress.set_postfix(loss=f"{loss_sum / seen:.4f}")
            window.zero_()
    loss_sum, correct, seen = accelerator.reduce(totals, "sum").tolist()
    _raise_if_not_finite(loss_sum, epoch, step)
    return {"loss": loss_sum / seen, "acc": correct / seen, "lr": lr}


def _raise_if_not_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not torch.isfinite(torch.tensor(loss_sum)):
        raise NonFiniteLossError(
            f"training loss is {loss_sum} in epoch {epoch + 1}, step {step}; the last good checkpoint is kept. "
            "Lower OPTIMIZER.lr, add SCHEDULER.warmup, or try TRAIN.mixed_precision no")


@torch.no_grad()
def predict(model, loader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
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
    return logits[keep], targets[keep]


def evaluate(model, loader, accelerator, num_per_cls: list[int]) -> dict[str, float | None]:
    logits, targets = predict(model, loader, accelerator)
    return summarize(logits, targets, num_per_cls)
