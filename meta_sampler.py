"""BALMS's meta sampler (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020,
section 3.3): in stage 2, on the frozen backbone, a sampling distribution over the training images learnt so that
one SGD step of the classifier on its batch lowers the cross-entropy on a class-balanced meta set.

`DATASET.sampler meta` with TRAIN.stage2_from. Every step of MetaSampledLoader:
1. draws the batch: image i with probability proportional to sigmoid(w[y_i]), one learnable weight w per class,
   by the Gumbel-max trick over the whole training split (each of the B draws with its own noise);
2. weighs each drawn image's Balanced Softmax loss by the straight-through Gumbel-softmax: 1 in value, the soft
   sample's derivative in gradient;
3. takes a differentiable copy of the run's SGD step of the classifier on that loss (its lr, momentum buffer,
   dampening, Nesterov and weight decay as they stand), with torch.func;
4. scores the stepped classifier by cross-entropy on a class-balanced meta batch, drawn as BALMS draws its meta set:
   from the training split (CIFAR, and here ImageFolderLT), from the val list on ImageNet-LT and Places-LT (so there
   the sampler learns on validation images, and the run keeps its last epoch rather than select on them);
5. moves w by that score's gradient with Adam (META_SAMPLER.lr);
6. hands the batch on to the ordinary training step.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState
from torch import nn
from torch.func import functional_call, grad

from datasets.list_loaders import CachedLoader
from datasets.loaders import stream_seed
from errors import ConfigError

META = "meta"  # the DATASET.sampler value


def initial_weights(num_per_cls, init_pow: float) -> torch.Tensor:
    """w such that sigmoid(w) is proportional to prior^-init_pow, scaled into (0, 1) by (min + max) as BALMS does:
    init_pow 0 draws every image alike (instance sampling), 1 every class alike."""
    counts = torch.as_tensor(num_per_cls, dtype=torch.float32)
    rates = (counts / counts.sum()).pow(-init_pow)
    rates = rates / (rates.min() + rates.max())
    return rates.log() - (1 - rates).log()


class Draw(NamedTuple):
    """One batch drawn from the training split: the images' indices and the Gumbel noise that picked them (one row
    per draw, one column per training image), kept to differentiate the draw afterwards."""
    indices: torch.Tensor
    noise: torch.Tensor


def draw(weight: torch.Tensor, targets: torch.Tensor, batch: int, generator: torch.Generator) -> Draw:
    """`batch` images, each the argmax over the split of log sigmoid(w[y_i]) + Gumbel noise: image i with
    probability sigmoid(w[y_i]) / sum_j sigmoid(w[y_j])."""
    noise = -torch.empty(batch, len(targets), device=targets.device).exponential_(generator=generator).log()
    with torch.no_grad():
        return Draw((F.logsigmoid(weight)[targets] + noise).argmax(1), noise)


def selection(weight: torch.Tensor, targets: torch.Tensor, drawn: Draw) -> torch.Tensor:
    """The straight-through Gumbel-softmax (temperature 1) of each draw, at the image it drew: 1 in value, and the
    gradient of the soft sample softmax(log sigmoid(w[y]) + noise) there."""
    soft = torch.softmax(F.logsigmoid(weight)[targets] + drawn.noise, dim=1)
    chosen = soft.gather(1, drawn.indices[:, None]).squeeze(1)
    return 1 + chosen - chosen.detach()


class InnerSGD(NamedTuple):
    """The SGD step the run's optimizer would take on the classifier now, per trained parameter name."""
    lr: dict
    momentum: dict
    dampening: dict
    nesterov: dict
    weight_decay: dict
    buffers: dict  # the momentum buffer, or None before the first step


def inner_sgd(optimizer, named: dict) -> InnerSGD:
    """The settings of `optimizer` (torch.optim.SGD, or accelerate's wrapper of it) for the parameters `named`."""
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    fields = {key: {} for key in InnerSGD._fields}
    for name, p in named.items():
        group = group_of[id(p)]
        for key in ("lr", "momentum", "dampening", "nesterov", "weight_decay"):
            fields[key][name] = group[key]
        fields["buffers"][name] = optimizer.state.get(p, {}).get("momentum_buffer")
    return InnerSGD(**fields)


def sgd_step(params: dict, grads: dict, sgd: InnerSGD) -> dict:
    """torch.optim.SGD's update of `params` by `grads`, out of place, so that it can be differentiated."""
    stepped = {}
    for name, p in params.items():
        d_p = grads[name] + sgd.weight_decay[name] * p
        momentum, buf = sgd.momentum[name], sgd.buffers[name]
        if momentum:
            buf = d_p if buf is None else momentum * buf + (1 - sgd.dampening[name]) * d_p
            d_p = d_p + momentum * buf if sgd.nesterov[name] else buf
        stepped[name] = p - sgd.lr[name] * d_p
    return stepped


class MetaBatch(NamedTuple):
    """What one meta step reads, all but the sampler's weights: the classifier as it stands, the drawn batch and the
    meta batch, as features of the frozen backbone."""
    classifier: nn.Module
    params: dict  # the classifier's trained parameters, by name
    sgd: InnerSGD
    loss: nn.Module  # Balanced Softmax, whose per-image form the inner step weighs
    targets: torch.Tensor  # of the whole training split, which the batch was drawn from
    drawn: Draw
    features: torch.Tensor
    labels: torch.Tensor
    meta_features: torch.Tensor
    meta_labels: torch.Tensor


def meta_loss(weight: torch.Tensor, batch: MetaBatch) -> torch.Tensor:
    """Cross-entropy on the meta batch of the classifier after one SGD step on the drawn batch's Balanced Softmax,
    each image's loss weighted by its straight-through selection: a function of the sampler's weights."""
    weights = selection(weight, batch.targets, batch.drawn)

    def inner_loss(params: dict) -> torch.Tensor:
        logits = functional_call(batch.classifier, params, (batch.features,))
        losses = batch.loss.per_image(logits.float(), batch.labels)
        return (losses * weights).mean()

    stepped = sgd_step(batch.params, grad(inner_loss)(batch.params), batch.sgd)
    return F.cross_entropy(functional_call(batch.classifier, stepped, (batch.meta_features,)).float(),
                           batch.meta_labels)


def sampler_gradient(weight: torch.Tensor, batch: MetaBatch) -> torch.Tensor:
    """d meta_loss / d w: what BALMS's meta_forward leaves in its sample learner's gradient."""
    return grad(meta_loss)(weight.detach(), batch)


def features_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What `model`'s classifier (`model.get_classifier()`) receives for `images`: the frozen backbone's features."""
    captured = []
    hook = model.get_classifier().register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        model(images)
    finally:
        hook.remove()
    return captured[0]


class Images(NamedTuple):
    """What the meta sampler reads of a loader: its split's labels, on the training device, the shape of its training
    batches, and how it makes a batch of given images."""
    targets: torch.Tensor
    batch_size: int  # of one process
    rank: int
    world_size: int
    make: Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def images_of(loader) -> Images:
    """A TensorLoader's images augmented on the device as its batches are (CIFAR, ImageFolderLT); a CachedLoader's
    (the list benchmarks) cropped from its uint8 cache as its workers crop them, but in this process."""
    if isinstance(loader, CachedLoader):
        crops = loader.crops

        def make(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            seed = int(torch.randint(2**62, (1,), device=generator.device, generator=generator))
            return loader.normalise(crops.crops_of(idx.cpu(), torch.Generator().manual_seed(seed)))
        return Images(crops.targets.to(loader.device), crops.batch_size, crops.rank, crops.world_size, make)
    offsets = torch.arange(loader.size, device=loader.device)
    return Images(loader.targets, loader.batch_size, loader.rank, loader.world_size,
                  lambda idx, generator: loader.augment(idx, generator, offsets))


class MetaSampledLoader(DataLoaderStateMixin):
    """Training batches drawn by the meta sampler from a loader's split and made by that loader (a TensorLoader, or a
    list benchmark's CachedLoader); before it hands a batch on, it takes the meta step on it (see the module's
    docstring). As many batches an epoch, of the same sizes, as the loader gives. The meta batches:
    META_SAMPLER.batch_size draws from `meta_loader`'s split, each a class uniformly and then one of its images (with
    replacement), made as that loader makes its batches (a training loader augments them, an evaluation one does not).

    It runs in one process (see `check_processes`)."""

    def __init__(self, loader, meta_loader, model: nn.Module, optimizer, criterion, accelerator, num_per_cls, *,
                 lr: float, meta_batch: int, init_pow: float, seed: int) -> None:
        self.base, self.model, self.optimizer, self.accelerator = loader, model, optimizer, accelerator
        self.train_images, self.meta_images = images_of(loader), images_of(meta_loader)
        self.criterion = criterion
        self.device = self.train_images.targets.device
        self.weight = nn.Parameter(initial_weights(num_per_cls, init_pow).to(self.device))
        self.sampler_optimizer = torch.optim.Adam([self.weight], lr=lr)  # BALMS's optimizer_meta
        self.meta_batch = meta_batch
        self.seed, self.epoch = seed, 0
        meta_targets = self.meta_images.targets
        self.by_class = meta_targets.argsort(stable=True)  # the meta split's indices, class by class
        counts = torch.bincount(meta_targets, minlength=len(num_per_cls))
        self.meta_counts, self.meta_starts = counts, counts.cumsum(0) - counts
        self.class_counts = torch.bincount(self.train_images.targets, minlength=len(num_per_cls))
        self.gradient_state = GradientState()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def state_dict(self) -> dict:
        """What the sampler has learnt: its per-class weights and its Adam state (the draws of an epoch follow from
        the seed and the epoch alone)."""
        return {"weight": self.weight.detach().clone(),
                "optimizer": copy.deepcopy(self.sampler_optimizer.state_dict())}  # Adam updates its moments in place

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.weight.copy_(state["weight"])
        self.sampler_optimizer.load_state_dict(state["optimizer"])

    def __len__(self) -> int:
        return len(self.base)

    def batch_sizes(self) -> list[int]:
        """The loader's: full batches of its shard, and the last, partial one unless it would hold one image."""
        train = self.train_images
        shard = len(train.targets) // train.world_size
        return [min(train.batch_size, shard - i * train.batch_size) for i in range(len(self))]

    def probabilities(self) -> torch.Tensor:
        """The chance that a draw picks each class, as the sampler stands."""
        mass = self.class_counts * torch.sigmoid(self.weight.detach())
        return mass / mass.sum()

    def __iter__(self):
        train = self.train_images
        # a stream apart from the loader's, whose augmentation draws from stream_seed(seed, epoch, rank) itself
        generator = torch.Generator(self.device).manual_seed(stream_seed(self.seed, self.epoch, train.rank) * 3 + 1)
        sizes = self.batch_sizes()
        self.begin()
        try:
            for i, size in enumerate(sizes):
                drawn = draw(self.weight, train.targets, size, generator)
                images = train.make(drawn.indices, generator)
                meta = self.meta_indices(generator)
                self.meta_step(drawn, images, self.meta_images.make(meta, generator), self.meta_images.targets[meta])
                self.end_of_dataloader = i == len(sizes) - 1
                yield images, train.targets[drawn.indices]
            shares = ", ".join(f"{p:.3f}" for p in self.probabilities().tolist())  # a host sync, once an epoch
            self.accelerator.print(f"meta sampler, epoch {self.epoch + 1}: a draw picks class 0, 1, ... with "
                                   f"probability {shares}")
        finally:
            self.end()

    def meta_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Class-balanced draws from the meta split: a class uniformly, then one of its images uniformly."""
        classes = torch.randint(len(self.meta_counts), (self.meta_batch,), device=self.device, generator=generator)
        within = (torch.rand(self.meta_batch, device=self.device, generator=generator) * self.meta_counts[classes])
        return self.by_class[self.meta_starts[classes] + within.long()]

    def meta_step(self, drawn: Draw, images: torch.Tensor, meta_images: torch.Tensor,
                  meta_labels: torch.Tensor) -> None:
        with torch.no_grad(), self.accelerator.autocast():
            features, meta_features = (features_of(self.model, x).float() for x in (images, meta_images))
        classifier = self.model.get_classifier()
        named = {name: p for name, p in classifier.named_parameters() if p.requires_grad}
        targets = self.train_images.targets
        batch = MetaBatch(classifier, {name: p.detach() for name, p in named.items()},
                          inner_sgd(self.optimizer, named), self.criterion, targets, drawn, features,
                          targets[drawn.indices], meta_features, meta_labels)
        self.weight.grad = sampler_gradient(self.weight, batch)
        self.sampler_optimizer.step()


# BALMS's meta set: the training split on CIFAR (and here on ImageFolderLT), the val list on these
META_FROM_VAL = ("ImageNetLT", "PlacesLT")
# Where the meta sampler learns on the val list, its val scores are no held-out measure: the last epoch is kept
LEARNS_ON_VAL = "last epoch (the meta sampler learns on val)"


def checkpoint_selection(cfg, select_on: str) -> str:
    """How a run picks the checkpoint it reports, as its results' `selected_by` says it: by TRAIN.ckp_metric on
    `select_on` ("val bcr"), or LEARNS_ON_VAL where the meta sampler learns on the val list (META_FROM_VAL)."""
    if cfg.DATASET.sampler == META and cfg.DATASET.name in META_FROM_VAL and select_on == "val":
        return LEARNS_ON_VAL
    return f"{select_on} {cfg.TRAIN.ckp_metric}"


def with_meta_sampler(cfg, loaders: dict, train_loader, model: nn.Module, optimizer, criterion, accelerator,
                      num_per_cls):
    """`train_loader` as it is, or with DATASET.sampler meta, a MetaSampledLoader over it whose meta batches come
    from `loaders["val"]` on META_FROM_VAL, else from the training split. `model` is the unwrapped stage-2 model,
    `optimizer` the prepared one."""
    if cfg.DATASET.sampler != META:
        return train_loader
    meta = cfg.META_SAMPLER
    meta_loader = loaders["val"] if cfg.DATASET.name in META_FROM_VAL else train_loader
    return MetaSampledLoader(train_loader, meta_loader, model, optimizer, criterion, accelerator, num_per_cls,
                             lr=meta.lr, meta_batch=meta.batch_size or cfg.DATASET.batch_size,
                             init_pow=meta.init_pow, seed=cfg.DEFAULT.seed)


def check_processes(cfg, num_processes: int) -> None:
    """Refuse the meta sampler under several processes, in one line: BALMS differentiates one SGD step on the whole
    batch against the whole meta batch, and a process holds only its shard of each (their sampler gradients, each
    of a step on one shard, would average to another gradient)."""
    if cfg.DATASET.sampler == META and num_processes > 1:
        raise ConfigError(f"DATASET.sampler meta runs in one process, not {num_processes}: its meta step "
                          "differentiates one SGD step on the whole batch, which the processes would split; launch "
                          "it as one process (python main.py, not torchrun or accelerate launch)")


def sampler_state(loader) -> dict | None:
    """For the last checkpoint: a MetaSampledLoader's state, None for any other loader."""
    return loader.state_dict() if isinstance(loader, MetaSampledLoader) else None


def restore_sampler(loader, state: dict | None) -> str | None:
    """Resuming: give a MetaSampledLoader the state the checkpoint saved. Returns a note where there is none to give
    (a checkpoint written before the sampler's state was saved): the sampler then starts again from its first
    weights."""
    if not isinstance(loader, MetaSampledLoader):
        return None
    if state is None:
        return "the checkpoint holds no meta-sampler state (written before it was saved): the sampler starts afresh"
    loader.load_state_dict(state)
    return None


def check_meta_sampler(cfg) -> None:
    """Refuse a meta-sampler config that would not run as BALMS's does, naming the fix."""
    if cfg.DATASET.sampler != META:
        return
    data = cfg.DATASET
    refusals = [
        (cfg.TRAIN.stage2_from is None, "without TRAIN.stage2_from: the meta sampler trains in stage 2, on a frozen "
         "backbone; set TRAIN.stage2_from to a stage-1 checkpoint"),
        (cfg.LOSS.name != "BalancedSoftmax", f"with LOSS.name {cfg.LOSS.name}: its inner step is on Balanced "
         "Softmax; set LOSS.name BalancedSoftmax"),
        (cfg.OPTIMIZER.name != "SGD", f"with OPTIMIZER.name {cfg.OPTIMIZER.name}: it differentiates an SGD step; "
         "set OPTIMIZER.name SGD"),
        (data.name == "iNat2018", "on iNat2018: BALMS's meta set there would be the val list, which is also "
         "iNat2018's test set"),
        (data.loader != "fast", f"with DATASET.loader {data.loader}: it makes the batches it draws with the fast "
         "loader; set DATASET.loader fast"),
        (cfg.TRAIN.grad_accum_steps != 1, f"with TRAIN.grad_accum_steps {cfg.TRAIN.grad_accum_steps}: it takes its "
         "step once a forward pass; set TRAIN.grad_accum_steps 1"),
    ]
    for wrong, why in refusals:
        if wrong:
            raise ConfigError(f"DATASET.sampler meta does not run {why}")
    meta = cfg.META_SAMPLER
    if not 0 < meta.lr < math.inf:
        raise ConfigError(f"META_SAMPLER.lr must be a number > 0, got {meta.lr}")
    if meta.batch_size is not None and (isinstance(meta.batch_size, bool) or not isinstance(meta.batch_size, int)
                                        or meta.batch_size < 1):
        raise ConfigError(f"META_SAMPLER.batch_size must be a whole number >= 1, or null for DATASET.batch_size; "
                          f"got {meta.batch_size!r}")
    if not 0 <= meta.init_pow < math.inf:
        raise ConfigError(f"META_SAMPLER.init_pow must be a number >= 0, got {meta.init_pow}")
