"""mixup.Mixup: input mixup on whole batches (Zhang et al. 2018), the loss on both labels, as BagofTricks-LT's
combiner.mix_up does it, inside train.train_one_epoch; mixup.Remix: Remix's label weights (Chou et al. 2020, eq. 10)."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch import nn

import train
from conftest import Batches
from losses import build_loss
from mixup import MixedTargets, Mixup, Remix, build_mixup


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


# ------------------------------------------------------------------------------------------------------------ Remix
REMIX_COUNTS = [500, 150, 60, 20, 5]  # ratios below and above kappa 3 between neighbours and far apart


def remix_weight_by_the_paper(lam: float, n_i: float, n_j: float, kappa: float, tau: float) -> float:
    """Chou et al., eq. 10: the label weight of y_i in lam x x_i + (1 - lam) x x_j."""
    if n_i / n_j >= kappa and lam < tau:
        return 0.0
    if n_i / n_j <= 1 / kappa and 1 - lam < tau:
        return 1.0
    return lam


@pytest.mark.parametrize("kappa, tau", [(3.0, 0.5), (1.5, 0.8), (10.0, 0.2)])
def test_remix_mixes_as_mixup_and_weighs_each_images_labels_as_the_papers_equation(kappa, tau):
    """From the same random state, Remix's images and label pairs are Mixup's, and each image's weight on its first
    label is eq. 10 of the paper at Mixup's lam."""
    images = torch.randn(64, 3, 4, 4)
    targets = torch.randint(0, len(REMIX_COUNTS), (64,), generator=torch.Generator().manual_seed(0))
    reassigned = 0
    for draw in range(40):  # lams on both sides of tau
        torch.manual_seed(draw)
        mixed, labels = Mixup(1.0)(images, targets)
        torch.manual_seed(draw)
        remixed, relabels = Remix(1.0, REMIX_COUNTS, kappa, tau)(images, targets)
        assert torch.equal(remixed, mixed) and torch.equal(relabels.a, labels.a) and torch.equal(relabels.b, labels.b)
        expected = [remix_weight_by_the_paper(labels.lam, REMIX_COUNTS[a], REMIX_COUNTS[b], kappa, tau)
                    for a, b in zip(labels.a.tolist(), labels.b.tolist())]
        assert relabels.lam.tolist() == pytest.approx(expected)
        reassigned += sum(weight != pytest.approx(labels.lam) for weight in expected)
    assert reassigned > 0  # labels were reassigned, so the check saw both kinds of image


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "BalancedSoftmax", "LogitAdjusted", "Focal", "LDAM"])
def test_a_remixed_batchs_loss_is_the_mean_of_each_images_weighted_losses(name):
    """Each image's loss on each of its labels, computed alone (a batch of one), weighted by its own lam."""
    torch.manual_seed(0)
    criterion = build_loss(name, REMIX_COUNTS, {"gamma": 2.0})
    logits = torch.randn(12, 5)
    a, b = torch.randint(0, 5, (12,)), torch.randint(0, 5, (12,))
    lam = torch.tensor([0.0, 1.0, 0.3, 0.7] * 3)
    expected = sum(float(lam[i]) * criterion(logits[i:i + 1], a[i:i + 1])
                   + (1 - float(lam[i])) * criterion(logits[i:i + 1], b[i:i + 1]) for i in range(12)) / 12
    torch.testing.assert_close(criterion(logits, MixedTargets(a, b, lam)), expected)
    # with every image at one lam, the loss is mixup's
    same = torch.full((12,), 0.3)
    torch.testing.assert_close(criterion(logits, MixedTargets(a, b, same)), criterion(logits, MixedTargets(a, b, 0.3)))


def test_remixed_accuracy_counts_each_image_at_its_own_weights():
    outputs = torch.eye(4)  # predicts 0, 1, 2, 3
    labels = MixedTargets(torch.tensor([0, 1, 0, 0]), torch.tensor([1, 0, 2, 3]), torch.tensor([1.0, 0.0, 0.25, 0.5]))
    assert float(train.correct(outputs, labels)) == pytest.approx(1.0 + 0.0 + 0.75 + 0.5)


def test_the_train_section_picks_mixup_or_remix():
    from omegaconf import OmegaConf

    section = OmegaConf.create({"mixup": True, "mixup_alpha": 1.0, "remix": False, "remix_kappa": 3.0,
                                "remix_tau": 0.5})
    assert type(build_mixup(section, REMIX_COUNTS)) is Mixup
    section.remix = True
    remix = build_mixup(section, REMIX_COUNTS)
    assert isinstance(remix, Remix) and (remix.kappa, remix.tau) == (3.0, 0.5)
    section.mixup = False
    assert build_mixup(section, REMIX_COUNTS) is None
