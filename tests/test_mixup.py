"""mixup.Mixup: input mixup on whole batches (Zhang et al. 2018), the loss on both labels, as BagofTricks-LT's
combiner.mix_up does it, inside train.train_one_epoch."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

import train
from conftest import Batches
from losses import build_loss
from mixup import MixedTargets, Mixup


def test_each_image_is_mixed_with_the_one_whose_label_it_takes_second():
    images = torch.randn(16, 3, 4, 4).to(memory_format=torch.channels_last)
    targets = torch.arange(16)  # label i is image i: the second labels name the partner images
    torch.manual_seed(0)
    mixed, labels = Mixup(1.0)(images, targets)
    assert isinstance(labels, MixedTargets) and 0 <= labels.lam <= 1
    assert torch.equal(labels.a, targets) and sorted(labels.b.tolist()) == list(range(16))  # a permutation
    torch.testing.assert_close(mixed, labels.lam * images + (1 - labels.lam) * images[labels.b])
    assert mixed.is_contiguous(memory_format=torch.channels_last)


def test_lam_follows_beta_alpha_alpha():
    torch.manual_seed(0)
    images, targets = torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)
    uniform = torch.tensor([Mixup(1.0)(images, targets)[1].lam for _ in range(4000)])
    counts = torch.histc(uniform, bins=10, min=0, max=1)
    chi2 = float(((counts - 400) ** 2 / 400).sum())
    assert chi2 < 33.72  # Beta(1, 1) is uniform: 9 degrees of freedom, p = 1e-4
    peaked = torch.tensor([Mixup(2.0)(images, targets)[1].lam for _ in range(4000)])
    # Beta(2, 2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/20
    assert float(peaked.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(peaked.var()) == pytest.approx(0.05, abs=0.005)


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "BalancedSoftmax", "LDAM"])
def test_an_epoch_with_mixup_is_bagoftricks_mix_up_written_out(fresh_accelerate, name):
    """BagofTricks-LT (lib/core/combiner.py, mix_up): l ~ Beta(alpha, alpha), a permutation of the batch, the images
    mixed, loss l x loss(a) + (1 - l) x loss(b), accuracy l x hits(a) + (1 - l) x hits(b)."""
    generator = torch.Generator().manual_seed(0)
    batches = Batches((torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator))
                      for n in (4, 4, 2))
    counts = [40, 20, 10, 5]

    def model_and_loss():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 4))
        return model, build_loss(name, counts)

    reference, criterion = model_and_loss()
    by_hand = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    loss_sum = correct = 0.0
    for images, targets in batches:
        lam = float(beta.sample())
        perm = torch.randperm(len(images))
        outputs = reference(lam * images + (1 - lam) * images[perm])
        loss = lam * criterion(outputs, targets) + (1 - lam) * criterion(outputs, targets[perm])
        predicted = outputs.argmax(1)
        loss_sum += loss.item() * len(images)
        correct += lam * (predicted == targets).sum().item() + (1 - lam) * (predicted == targets[perm]).sum().item()
        loss.backward()
        by_hand.step()
        by_hand.zero_grad()

    model, criterion = model_and_loss()
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    torch.manual_seed(1)
    scores = train.train_one_epoch(model, batches, criterion, optimizer, accelerator, 0, log_interval=2,
                                   mixup=Mixup(1.0))
    assert scores["loss"] == pytest.approx(loss_sum / 10, rel=1e-5)
    assert scores["acc"] == pytest.approx(correct / 10, rel=1e-5)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs)
