"""Our ResNet-32, Balanced Softmax loss and SGD step against BALMS's, from the same weights on the same batches.

    python tools/reference/same_step.py BALMS DATA SUBSET [--steps 8]

BALMS is its checkout (its model, classifier and loss files are loaded from there, never copied), DATA holds the
lossless cifar-10-batches-py, SUBSET a tools/ldam_subset.py file. Both sides start from our model's initial weights
(the head drawn as BALMS draws it), see the same augmented batches of our fast loader, in fp32 at a constant lr 0.1
with momentum 0.9 and weight decay 5e-4 (BALMS's), and print their losses and the largest weight difference a step.
Equal code gives equal losses at first and a difference that grows only as float rounding does.
"""
import argparse
import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from datasets.augment import batch_augmentations  # noqa: E402
from datasets.loaders import TensorLoader  # noqa: E402
from datasets.long_tail import read_subset  # noqa: E402
from losses import build_loss  # noqa: E402
from models import build_model  # noqa: E402
from optim import build_optimizer  # noqa: E402
from train import train_step  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def balms_state(ours: dict) -> dict:
    """Our CifarResNet's keys as BALMS's ResNet_Cifar names them (stem -> conv1/bn1, blocks.i -> layerS.j)."""
    renamed = {}
    for key, value in ours.items():
        if key.startswith("stem.0"):
            renamed[key.replace("stem.0", "conv1")] = value
        elif key.startswith("stem.1"):
            renamed[key.replace("stem.1", "bn1")] = value
        elif key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            renamed[f"layer{int(i) // 5 + 1}.{int(i) % 5}.{rest}"] = value
    return renamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("balms", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("subset", type=Path)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    sys.path.append(str(args.balms))  # their classifier file imports their utils
    feature = load(args.balms / "models/ResNet32Feature.py").create_model()
    head = load(args.balms / "models/DotProductClassifier.py").create_model(64, 10)
    their_loss = load(args.balms / "loss/BalancedSoftmaxLoss.py").create_loss(
        str(args.balms / "cls_freq/CIFAR-10-LT_IMBA100.json"))

    torch.manual_seed(0)
    model, _ = build_model("resnet32", 10, False, 32, "pytorch")
    feature.load_state_dict(balms_state(model.state_dict()), strict=True)
    head.fc.load_state_dict({"weight": model.fc.weight, "bias": model.fc.bias})
    criterion = build_loss("BalancedSoftmax", their_loss.sample_per_class.tolist())
    cfg = OmegaConf.create({"name": "SGD", "lr": 0.1, "weight_decay": 5e-4, "classifier_lr": None,
                            "params": {"momentum": 0.9, "nesterov": False}})
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    model, optimizer = accelerator.prepare(model, build_optimizer(cfg, model))
    theirs = torch.optim.SGD([{"params": part.parameters(), "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
                              for part in (feature, head)])

    batches = [pickle.load(open(args.data / f"cifar-10-batches-py/data_batch_{i}", "rb"), encoding="latin1")
               for i in range(1, 6)]
    images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array([label for b in batches for label in b["labels"]])
    subset = read_subset(str(args.subset), len(labels))
    loader = TensorLoader(images[subset], labels[subset], 512, MEAN, STD, device="cpu", train=True, crop=True,
                          flip=True, augmentations=batch_augmentations(["AutoAugment", "Cutout"], 32, "cpu", 128))
    model.train(), feature.train(), head.train()
    for step, (x, y) in zip(range(args.steps), loader):
        x = x.contiguous()
        ours = train_step(model, x, y, criterion, optimizer, accelerator)[0].item() / len(y)
        loss = their_loss(head(feature(x)[0])[0], y)
        theirs.zero_grad()
        loss.backward()
        theirs.step()
        gap = max((a - b).abs().max().item() for a, b in
                  zip(model.parameters(), [*feature.parameters(), *head.parameters()]))
        print(f"step {step}: loss ours {ours:.5f} BALMS {loss.item():.5f}, largest weight difference {gap:.1e}")


if __name__ == "__main__":
    main()
