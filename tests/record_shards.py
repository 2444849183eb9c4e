"""`python tests/fake_cifar.py DATADIR record_shards.py OUT [--labels] MAIN_ARGS...`: main.py, except that each
process writes the training images it is given each epoch, as their indices into the training split (`--labels`:
as their classes), to OUT/epoch{e}-rank{r}.json instead of training on them. The shard and sampler tests run it
under torchrun."""
from __future__ import annotations

import json
from pathlib import Path

import main as training


def main(argv: list[str]) -> None:
    out, labels = Path(argv[0]), argv[1:2] == ["--labels"]
    argv = argv[1 + labels:]
    build_loaders = training.build_loaders

    def indices_as_targets(cfg, splits, seed, accelerator, *args):
        # a loader yields each image with its target: with indices as targets, the index comes out with the image
        # (not with --labels: a class-balanced sampler draws by the targets, which must then stay the classes)
        if not labels:
            splits["train"].targets = list(range(len(splits["train"])))
        return build_loaders(cfg, splits, seed, accelerator, *args)

    def record(model, loader, criterion, optimizer, accelerator, epoch, *args):
        loader.set_epoch(epoch)  # as train_one_epoch does
        batches = [targets.tolist() for _, targets in loader]
        (out / f"epoch{epoch}-rank{accelerator.process_index}.json").write_text(json.dumps(batches))
        return {"loss": 0.0, "acc": 0.0, "lr": 0.0}

    training.build_loaders, training.train_one_epoch = indices_as_targets, record
    training.main(argv)
