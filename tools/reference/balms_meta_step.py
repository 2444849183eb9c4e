"""BALMS's meta sampler run by its own code on fixed inputs: its sample learner (data/MetaSampler.py) draws the batch,
its `model.meta_forward` (run_networks.py, with `higher`) takes the meta step, its batch_forward / batch_loss /
batch_backward the ordinary one, for STEPS steps. Prints, per step, the drawn images and the sampler's gradient,
which tests/test_meta_sampler.py holds meta_sampler.py to.

    cd /tmp/balms && PYTHONPATH=REPO/tools/reference /tmp/balms-env/bin/python REPO/tools/reference/balms_meta_step.py .

BALMS: the official code (github.com/jiawei-ren/BalancedMetaSoftmax-Classification, commit
34a61e432881816c2da14d577d6ed63501288f5f) extracted with `git archive` into a folder, run from there (its imports
are relative to it). It needs `higher` and the packages its files import (h5py, scikit-learn, matplotlib) in an
environment of their own (`python -m venv /tmp/balms-env --system-site-packages`), never in this project's.
sitecustomize.py (this folder) makes its .cuda() calls no-ops.

The frozen backbone is left out: BALMS's feature model is replaced by the identity on fixed features (the meta step
reads the backbone only through its features), so that both sides see the very same numbers. The Gumbel noise: their
learner draws it from torch's global generator, seeded GUMBEL_SEED + step before each draw; ours from a
torch.Generator seeded alike, which gives the same stream on a CPU.
"""
import argparse
import json
import os
import sys
import tempfile
import types

import torch
from torch import nn

CLASSES, FEATURES = 10, 16
COUNTS = [30, 20, 14, 10, 7, 5, 4, 3, 2, 2]  # 97 training images, long-tailed
BATCH, META_BATCH, STEPS = 12, 10, 3
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # its classifier's SGD in config/CIFAR10_LT/balms_imba200.yaml
SAMPLER_LR = 0.01  # its sampler's Adam (run_networks.py: training_opt['sampler'].get('lr', 0.01))
INIT_POW = 0.5  # theirs is 0 (all weights 0); 0.5 starts the classes apart, so the check covers the weights' effect
GUMBEL_SEED = 100


def fixed_inputs() -> dict:
    """Training features and labels (class means plus noise), the classifier's first weights, one class-balanced meta
    batch a step; all from one seeded generator."""
    g = torch.Generator().manual_seed(0)
    targets = torch.repeat_interleave(torch.arange(CLASSES), torch.tensor(COUNTS))
    means = torch.randn(CLASSES, FEATURES, generator=g)
    features = means[targets] + torch.randn(len(targets), FEATURES, generator=g)
    weight = 0.1 * torch.randn(CLASSES, FEATURES, generator=g)
    bias = 0.1 * torch.randn(CLASSES, generator=g)
    meta_labels = [torch.randperm(CLASSES, generator=g)[:META_BATCH] for _ in range(STEPS)]
    meta_features = [means[labels] + torch.randn(META_BATCH, FEATURES, generator=g) for labels in meta_labels]
    return {"targets": targets, "features": features, "weight": weight, "bias": bias,
            "meta": list(zip(meta_features, meta_labels))}


class Identity(nn.Module):
    """Their feature model's interface (features, feature maps), on features given as inputs."""

    def forward(self, x):
        return x, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("balms", help="the extracted BALMS code; run from inside it")
    args = parser.parse_args()
    os.chdir(args.balms)
    sys.path.insert(0, os.path.abspath("."))
    from run_networks import model as BalmsModel  # noqa: N812  their training class, with meta_forward
    from utils import source_import

    inputs = fixed_inputs()
    learner = source_import("./data/MetaSampler.py").get_learner()(num_classes=CLASSES, init_pow=INIT_POW)
    learner.init_learner(COUNTS)
    classifier = nn.DataParallel(source_import("./models/DotProductClassifier.py").create_model(FEATURES, CLASSES))
    with torch.no_grad():
        classifier.module.fc.weight.copy_(inputs["weight"])
        classifier.module.fc.bias.copy_(inputs["bias"])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as freq:
        json.dump(COUNTS, freq)
    loss = source_import("./loss/BalancedSoftmaxLoss.py").create_loss(freq.name)

    # their training object with what meta_forward and the batch_* methods read, built as their __init__ builds it
    balms = BalmsModel.__new__(BalmsModel)
    balms.learner = learner
    balms.meta_data = iter([(x, y, None) for x, y in inputs["meta"]])
    balms.networks = {"feat_model": nn.DataParallel(Identity()), "classifier": classifier}
    balms.criterions, balms.criterion_weights = {"PerformanceLoss": loss}, {"PerformanceLoss": 1.0}
    balms.criterion_optimizer, balms.memory, balms.num_gpus = None, {"centroids": False}, 0
    balms.model_optimizer = torch.optim.SGD([{"params": classifier.parameters(), "lr": LR, "momentum": MOMENTUM,
                                              "weight_decay": WEIGHT_DECAY}])
    balms.optimizer_meta = torch.optim.Adam(learner.parameters(), lr=SAMPLER_LR)
    balms.training_opt, balms.log_file = {}, None

    onehot = nn.functional.one_hot(inputs["targets"], CLASSES).float()
    print(f"initial sampler weights: {learner.fc[0].weight.detach().squeeze(0).tolist()}")
    for step in range(STEPS):
        torch.manual_seed(GUMBEL_SEED + step)
        indices = learner(onehot, BATCH)  # what their MetaSampler yields; the sample waits in the learner's queue
        x, y = inputs["features"][indices], inputs["targets"][indices]
        balms.meta_forward(x, y)
        print(f"step {step}: drawn {indices.tolist()}")
        print(f"step {step}: sampler gradient {[float(v) for v in learner.fc[0].weight.grad.squeeze(0)]}")
        balms.batch_forward(x, y, centroids=False, phase="train")
        balms.batch_loss(y)
        balms.batch_backward()
    print(f"final sampler weights: {learner.fc[0].weight.detach().squeeze(0).tolist()}")
    os.unlink(freq.name)


if __name__ == "__main__":
    main()
