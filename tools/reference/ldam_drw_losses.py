"""LDAM-DRW's own losses and class weights on fixed logits and labels: the expected values of tests/test_losses.py.

    git --git-dir=LDAM_DRW_GIT show 2536330f2afdaa65618323cb5a5850efccce762a:losses.py > /tmp/ldam_drw/losses.py
    git --git-dir=LDAM_DRW_GIT show 2536330f2afdaa65618323cb5a5850efccce762a:cifar_train.py > /tmp/ldam_drw/cifar_train.py
    python tools/reference/ldam_drw_losses.py /tmp/ldam_drw > tests/fixtures/ldam_drw_reference.json

It imports LDAMLoss and FocalLoss from LDAM-DRW's losses.py (github.com/kaidic/LDAM-DRW at the commit above), and
runs cifar_train.py's own 'Reweight' and 'DRW' blocks (cut out of its main loop, `.cuda(args.gpu)` dropped) for
the class weights. LDAMLoss builds torch.cuda.FloatTensor; on a CPU those are aliased to torch.FloatTensor, which
computes the same in float32. Nothing of this repository is imported: the inputs are written out below, and the
test rebuilds them with the same formulas.
"""
import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

COMMIT = "2536330f2afdaa65618323cb5a5850efccce762a"
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT at IF 100
BATCH = 12


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine-like logits in [-1, 1] and labels covering every class, without a random generator."""
    k = torch.arange(BATCH * len(COUNTS), dtype=torch.float64).reshape(BATCH, len(COUNTS))
    logits = torch.sin(1.7 * k + 0.3).float()
    targets = (torch.arange(BATCH) * 3) % len(COUNTS)
    return logits, targets


def load(folder: Path):
    torch.cuda.FloatTensor = torch.FloatTensor  # the reference's CUDA tensors, on the CPU
    spec = importlib.util.spec_from_file_location("ldam_drw_losses", folder / "losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weights(folder: Path, rule: str, epoch: int) -> torch.Tensor:
    """cifar_train.py's per_cls_weights for `rule` ('Reweight' or 'DRW') at `epoch`, by its own lines."""
    source = (folder / "cifar_train.py").read_text()
    start = source.index(f"elif args.train_rule == '{rule}':")
    first = source.index("\n", start) + 1
    indent = len(source[first:]) - len(source[first:].lstrip())
    lines = []
    for line in source[first:].splitlines():  # the block: its lines indented deeper than the `elif`
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        lines.append(line)
    body = textwrap.dedent("\n".join(lines)).replace(".cuda(args.gpu)", "")
    scope = {"np": np, "torch": torch, "cls_num_list": COUNTS, "epoch": epoch, "args": SimpleNamespace(gpu=None)}
    exec(body, scope)
    return scope["per_cls_weights"]


def value_and_grad(criterion, logits: torch.Tensor, targets: torch.Tensor) -> dict:
    logits = logits.clone().requires_grad_()
    loss = criterion(logits, targets)
    loss.backward()
    return {"loss": loss.item(), "grad": logits.grad.tolist()}


def main() -> None:
    folder = Path(sys.argv[1])
    reference = load(folder)
    logits, targets = inputs()
    cb = weights(folder, "Reweight", 0)
    drw_before, drw_after = weights(folder, "DRW", 159), weights(folder, "DRW", 160)
    cases = {
        "LDAM": reference.LDAMLoss(cls_num_list=COUNTS, max_m=0.5, s=30),
        "LDAM-DRW": reference.LDAMLoss(cls_num_list=COUNTS, max_m=0.5, s=30, weight=drw_after),
        "CE-CB": torch.nn.CrossEntropyLoss(weight=cb),
        "Focal": reference.FocalLoss(gamma=1),
        "Focal-gamma2": reference.FocalLoss(gamma=2),
        "Focal-CB": reference.FocalLoss(weight=cb, gamma=1),
    }
    print(json.dumps({
        "source": f"github.com/kaidic/LDAM-DRW at {COMMIT}: losses.py, cifar_train.py",
        "script": "tools/reference/ldam_drw_losses.py", "counts": COUNTS,
        "weights": {"Reweight": cb.tolist(), "DRW epoch 159": drw_before.tolist(), "DRW epoch 160": drw_after.tolist()},
        "margins": reference.LDAMLoss(cls_num_list=COUNTS).m_list.tolist(),
        "cases": {name: value_and_grad(criterion, logits, targets) for name, criterion in cases.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
