"""datasets.loaders: the fast TensorLoader against torchvision's per-image classic_transform."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from config import load_config
from conftest import ROOT
from datasets import build_loaders
from datasets.loaders import PAD, TensorLoader, classic_loader, classic_transform

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SIZE = 32
SHIFTS = 2 * 4 + 1  # pad 4 on each side: 9 crop offsets per axis


def _id_images(n: int) -> np.ndarray:
    """N x 32 x 32 x 3 uint8 images whose every pixel encodes the image index i: (i % 250 + 1, i // 250 + 1, 7)."""
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    index = np.arange(n)
    images[..., 0] = (index % 250 + 1)[:, None, None]
    images[..., 1] = (index // 250 + 1)[:, None, None]
    images[..., 2] = 7
    return images


def _to_uint8(batch: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: B x 3 x H x W float -> B x H x W x 3 integer pixel values."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    pixels = ((batch.float() * std + mean) * 255).round()
    return pixels.permute(0, 2, 3, 1).to(torch.int64).numpy()


def _ids(batch: torch.Tensor) -> list[int]:
    pixels = _to_uint8(batch)[:, SIZE // 2, SIZE // 2]  # the centre pixel is never padding
    return ((pixels[:, 0] - 1) + 250 * (pixels[:, 1] - 1)).tolist()


# ---------------------------------------------------------------- (a) evaluation

def test_eval_yields_the_normalised_images_in_order_channels_last():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(23, SIZE, SIZE, 3), dtype=np.uint8)
    targets = rng.integers(0, 10, size=23).tolist()
    loader = TensorLoader(data, targets, 5, MEAN, STD, device="cpu", train=False)
    batches = list(loader)
    assert len(batches) == len(loader) == 5  # 5+5+5+5+3: the last, short batch is kept
    assert [len(x) for x, _ in batches] == [5, 5, 5, 5, 3]
    for x, _ in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, SIZE, SIZE)
        assert x.is_contiguous(memory_format=torch.channels_last)
    images = torch.cat([x for x, _ in batches])
    expected = (torch.from_numpy(data).permute(0, 3, 1, 2).double() / 255
                - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(images.double(), expected, rtol=0, atol=1e-5)
    assert torch.cat([y for _, y in batches]).tolist() == targets


def test_eval_matches_classic_transform_without_augmentation():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(6, SIZE, SIZE, 3), dtype=np.uint8)
    fast = torch.cat([x for x, _ in TensorLoader(data, [0] * 6, 4, MEAN, STD, device="cpu", train=False)])
    transform = classic_transform([], SIZE, MEAN, STD)
    classic = torch.stack([transform(Image.fromarray(image)) for image in data])
    torch.testing.assert_close(fast, classic, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [11, 12])
def test_eval_shards_of_two_ranks_cover_every_image_once(n):
    data, targets = _id_images(n), list(range(n))
    seen, seen_targets = [], []
    for rank in (0, 1):
        loader = TensorLoader(data, targets, 4, MEAN, STD, device="cpu", train=False, rank=rank, world_size=2)
        batches = list(loader)
        assert len(batches) == len(loader)
        rank_ids = [i for x, _ in batches for i in _ids(x)]
        assert rank_ids == list(range(rank, n, 2))  # every world_size-th image, in order
        seen += rank_ids
        seen_targets += [t for _, y in batches for t in y.tolist()]
    assert sorted(seen) == list(range(n))
    assert sorted(seen_targets) == list(range(n))


# ---------------------------------------------------------------- (b) training shards

def _epoch_ids(loader: TensorLoader, epoch: int) -> tuple[list[int], list[int]]:
    loader.set_epoch(epoch)
    ids, targets = [], []
    for x, y in loader:
        ids += _ids(x)
        targets += y.tolist()
    return ids, targets


def _train_loader(n: int, rank: int, seed: int = 0, batch_size: int = 4, **kwargs) -> TensorLoader:
    return TensorLoader(_id_images(n), list(range(n)), batch_size, MEAN, STD, device="cpu", train=True,
                        seed=seed, rank=rank, world_size=2, **kwargs)


def test_training_shards_are_disjoint_equal_and_labelled():
    n = 41
    ids0, targets0 = _epoch_ids(_train_loader(n, 0, batch_size=5), 0)
    ids1, targets1 = _epoch_ids(_train_loader(n, 1, batch_size=5), 0)
    assert ids0 == targets0 and ids1 == targets1  # each image comes with its own target
    assert len(ids0) == len(ids1) == n // 2
    assert len(set(ids0)) == len(ids0) and not set(ids0) & set(ids1)
    assert len(set(ids0) | set(ids1)) == 2 * (n // 2)


def test_training_shards_reshuffle_every_epoch_and_are_reproducible():
    n = 40
    loader = _train_loader(n, 0, crop=True, flip=True)
    epoch0, epoch1 = _epoch_ids(loader, 0)[0], _epoch_ids(loader, 1)[0]
    assert epoch0 != epoch1
    again = _train_loader(n, 0, crop=True, flip=True)
    assert _epoch_ids(again, 1)[0] == epoch1
    assert _epoch_ids(again, 0)[0] == epoch0
    assert _epoch_ids(_train_loader(n, 0, seed=1, crop=True, flip=True), 0)[0] != epoch0
    # the augmented pixels are reproducible too
    a, b = _train_loader(n, 0, crop=True, flip=True), _train_loader(n, 0, crop=True, flip=True)
    a.set_epoch(3)
    b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_every_image_is_trained_on_each_epoch_in_one_process():
    n = 30
    loader = TensorLoader(_id_images(n), list(range(n)), 8, MEAN, STD, device="cpu", train=True, seed=0)
    for epoch in range(3):
        ids, _ = _epoch_ids(loader, epoch)
        assert sorted(ids) == list(range(n))


@pytest.mark.parametrize("n,batch_size,sizes", [(40, 4, [4] * 5), (18, 4, [4, 4]), (22, 4, [4, 4, 3])])
def test_training_drops_only_a_last_batch_of_one(n, batch_size, sizes):
    # two processes: n // 2 images each; a trailing batch of one would break BatchNorm and is dropped
    loader = _train_loader(n, 1, batch_size=batch_size)
    assert [len(y) for _, y in loader] == sizes
    assert len(loader) == len(sizes)


def test_training_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    for _ in _train_loader(40, 0, crop=True, flip=True):
        pass
    assert torch.equal(torch.random.get_rng_state(), state)


# ---------------------------------------------------------------- (c) augmentation distribution

def _position_image() -> np.ndarray:
    """One 32x32x3 image whose pixel (r, c) is (r + 1, c + 1, 200): every value is > 0, so padding shows as 0."""
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.full_like(rows, 200)], -1).astype(np.uint8)


def _padded(image: np.ndarray) -> np.ndarray:
    return np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))


def _recover(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop offsets (dy, dx) into the padded image and the flips, from N output images (N x H x W x 3 integers)."""
    c = SIZE // 2  # the centre pixels are never padding
    flipped = outputs[:, c, c, 1] < outputs[:, c, c - 1, 1]
    # output row i shows padded row dy + i, i.e. source row dy + i - PAD, stored as that + 1
    dy = outputs[:, c, c, 0] - 1 + PAD - c
    # output column j shows padded column dx + j, or dx + SIZE - 1 - j when flipped
    dx = outputs[:, c, c, 1] - 1 + PAD - np.where(flipped, SIZE - 1 - c, c)
    return dy, dx, flipped


def _check_distribution(outputs: np.ndarray) -> None:
    """`outputs`: N x 32 x 32 x 3 integer images of the position image, randomly cropped (pad 4, zeros) and
    flipped. Each must be an exact crop of the zero-padded image; the offsets uniform over the 81 shifts and the
    flip rate 1/2."""
    padded = _padded(_position_image()).astype(np.int64)
    dy, dx, flipped = _recover(outputs)
    assert ((0 <= dy) & (dy < SHIFTS) & (0 <= dx) & (dx < SHIFTS)).all()
    offsets = np.arange(SIZE)
    rows = dy[:, None] + offsets
    cols = np.where(flipped[:, None], dx[:, None] + offsets[::-1], dx[:, None] + offsets)
    expected = padded[rows[:, :, None], cols[:, None, :]]
    # every output is exactly its crop of the zero-padded image, border zeros included
    np.testing.assert_array_equal(outputs, expected)
    cells = np.bincount(dy * SHIFTS + dx, minlength=SHIFTS ** 2).reshape(SHIFTS, SHIFTS)
    n = len(outputs)
    assert cells.min() > 0, "some crop offset never occurs"
    expected_per_cell = n / SHIFTS ** 2
    chi2 = float(((cells - expected_per_cell) ** 2 / expected_per_cell).sum())
    assert chi2 < 140, f"crop offsets not uniform: chi2 {chi2:.1f} with 80 degrees of freedom"  # p ~ 3e-5
    for marginal in (cells.sum(0), cells.sum(1)):  # each axis alone: 9 offsets, 8 degrees of freedom
        chi2_axis = float(((marginal - n / SHIFTS) ** 2 / (n / SHIFTS)).sum())
        assert chi2_axis < 35, f"offsets along one axis not uniform: chi2 {chi2_axis:.1f}"
    assert abs(flipped.mean() - 0.5) < 0.04, f"flip rate {flipped.mean():.3f}"
    # flips independent of the offsets: about half of the left-shifted and of the right-shifted crops are flipped
    for side in (dx < PAD, dx > PAD):
        assert abs(flipped[side].mean() - 0.5) < 0.07
    # a padded border row is visible exactly when the crop starts in the padding
    top_zero = (outputs[:, 0, :, 2] == 0).all(1)
    np.testing.assert_array_equal(top_zero, dy < PAD)


N_SAMPLES = 4000


def test_tensor_loader_crop_and_flip_distribution():
    data = np.repeat(_position_image()[None], N_SAMPLES, 0)
    loader = TensorLoader(data, [0] * N_SAMPLES, 1000, MEAN, STD, device="cpu", train=True, crop=True, flip=True,
                          seed=0)
    outputs = np.concatenate([_to_uint8(x) for x, _ in loader])
    assert len(outputs) == N_SAMPLES
    _check_distribution(outputs)


def test_classic_transform_crop_and_flip_distribution():
    transform = classic_transform(["RandomCrop", "RandomHorizontalFlip"], SIZE, MEAN, STD)
    image = Image.fromarray(_position_image())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        outputs = _to_uint8(torch.stack([transform(image) for _ in range(N_SAMPLES)]))
    _check_distribution(outputs)


def test_without_crop_and_flip_training_images_are_untouched():
    data = np.repeat(_position_image()[None], 8, 0)
    loader = TensorLoader(data, [0] * 8, 8, MEAN, STD, device="cpu", train=True, crop=False, flip=False, seed=0)
    (x, _), = list(loader)
    assert (_to_uint8(x) == _position_image()[None].astype(np.int64)).all()


def test_flip_only_never_shifts():
    data = np.repeat(_position_image()[None], 200, 0)
    loader = TensorLoader(data, [0] * 200, 200, MEAN, STD, device="cpu", train=True, crop=False, flip=True, seed=0)
    outputs = _to_uint8(next(iter(loader))[0])
    image = _position_image().astype(np.int64)
    flipped = np.array([(o == image[:, ::-1]).all() for o in outputs])
    assert all((o == image).all() or f for o, f in zip(outputs, flipped))
    assert 0.35 < flipped.mean() < 0.65


def test_classic_loader_batches_and_shuffles():
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    loader = classic_loader(dataset, 4, 0, seed=0)
    batches = [b[0].tolist() for b in loader]
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [i for b in batches for i in b] != list(range(10))
    # a final batch of one is dropped (BatchNorm cannot train on it)
    assert [len(b[0]) for b in classic_loader(torch.utils.data.TensorDataset(torch.arange(9)), 4, 0, seed=0)] == [4, 4]


# ---------------------------------------------------------------- (e) DATASET.batch_size: one optimizer step's

class _Split:
    """What build_loaders reads of a split: `n` images whose targets are their indices."""

    def __init__(self, n: int) -> None:
        self.data, self.targets, self.transform = _id_images(n), list(range(n)), None

    def __len__(self) -> int:
        return len(self.targets)


def _train_loaders(loader: str, batch_size: int, processes: int, accumulate: int, n: int) -> list:
    """The training loader of every process, as build_loaders makes it for `processes` x `accumulate`."""
    workers = ["DATASET.num_workers", "0"] if loader == "classic" else []  # the fast loader runs no workers
    cfg = load_config(ROOT / "configs.yaml", ["DATASET.loader", loader, "DATASET.batch_size", str(batch_size),
                                              "DATASET.mean", str(list(MEAN)), "DATASET.std", str(list(STD)),
                                              *workers])
    return [build_loaders(cfg.DATASET, {"train": _Split(n), "test": _Split(4)}, 0, SimpleNamespace(
        num_processes=processes, process_index=rank, device=torch.device("cpu"),
        gradient_accumulation_steps=accumulate))["train"] for rank in range(processes)]


@pytest.mark.parametrize("processes, accumulate", [(1, 1), (1, 4), (4, 1), (2, 2)])
def test_a_step_trains_on_batch_size_images_whatever_the_processes_and_accumulation(processes, accumulate):
    """A recipe's batch of 64 means the same on 1 GPU with 4 accumulation steps as on 4 GPUs without: each optimizer
    step (`accumulate` forward passes in each process) takes 64 images, and an epoch has as many steps."""
    loaders = _train_loaders("fast", 64, processes, accumulate, n=200)
    passes = [[len(targets) for _, targets in loader] for loader in loaders]  # per process, per forward pass
    assert len({len(p) for p in passes}) == 1  # the processes stay in step
    per_pass = [sum(sizes) for sizes in zip(*passes)]  # over the processes
    # accelerate steps after every `accumulate` passes, and after an epoch's last, shorter window
    steps = [sum(per_pass[i:i + accumulate]) for i in range(0, len(per_pass), accumulate)]
    assert steps == [64, 64, 64, 8]  # 200 = 3 x 64 + 8
    assert math.ceil(len(loaders[0]) / accumulate) == 4  # the steps per epoch main.py gives the schedule


@pytest.mark.parametrize("accumulate", [1, 4])
def test_the_classic_loader_batches_one_forward_pass_over_the_processes(accumulate):
    loader = _train_loaders("classic", 64, 1, accumulate, n=200)[0]  # accelerate's prepare splits it over processes
    assert loader.batch_size == 64 // accumulate


def test_a_batch_that_does_not_divide_over_the_forward_passes_is_refused(fresh_accelerate, tmp_path):
    import main
    with pytest.raises(SystemExit) as stop:  # refused before any data is read or file written
        main.main(["--config", str(ROOT / "configs.yaml"), "DEFAULT.savedir", str(tmp_path), "TRAIN.wandb.use", "false",
                   "DATASET.datadir", str(tmp_path), "DATASET.download", "false", "DATASET.batch_size", "32",
                   "TRAIN.grad_accum_steps", "3"])
    assert str(stop.value) == ("error: DATASET.batch_size 32 must divide evenly over 1 process(es) x "
                               "TRAIN.grad_accum_steps 3: make it a multiple of 3")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- (f) DATASET.sampler class_balanced

# A long tail of 10 classes, the last with a single image: 200, 120, 70, 40, 25, 12, 6, 3, 2, 1 (479 images)
TAIL = [200, 120, 70, 40, 25, 12, 6, 3, 2, 1]
# The chi-square statistic of 10 classes (9 degrees of freedom) that uniform draws exceed once in 10,000
CHI2_9_DOF_P0001 = 33.72


def chi_square_uniform(classes: list[int], num_classes: int) -> float:
    """Pearson's statistic of the class counts in `classes` against equal counts."""
    counts = torch.bincount(torch.as_tensor(classes), minlength=num_classes).double()
    expected = len(classes) / num_classes
    return float(((counts - expected) ** 2 / expected).sum())


def _tail_targets() -> list[int]:
    return [c for c, n in enumerate(TAIL) for _ in range(n)]


def _balanced_loader(rank: int, world_size: int, batch_size: int = 16) -> TensorLoader:
    targets = _tail_targets()
    return TensorLoader(_id_images(len(targets)), targets, batch_size, MEAN, STD, device="cpu", train=True, seed=3,
                        rank=rank, world_size=world_size, sampler="class_balanced")


def test_class_balanced_draws_every_class_equally_even_one_of_a_single_image():
    from datasets import ClassBalancedSampler

    targets = _tail_targets()
    sampler = ClassBalancedSampler(targets, seed=0)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epoch_draws = [targets[i] for i in sampler]
        assert len(epoch_draws) == len(targets)  # an epoch as long as instance sampling's
        draws += epoch_draws
    assert chi_square_uniform(draws, 10) < CHI2_9_DOF_P0001
    assert draws.count(9) > 0.08 * len(draws)  # the class of one image: about a tenth of the draws
    # the control: instance sampling of the same targets is far from uniform over the classes
    assert chi_square_uniform(targets * 20, 10) > 100 * CHI2_9_DOF_P0001


def test_class_balanced_draws_depend_on_seed_and_epoch_alone():
    from datasets import ClassBalancedSampler

    a, b = ClassBalancedSampler(_tail_targets(), seed=0), ClassBalancedSampler(_tail_targets(), seed=0)
    a.set_epoch(2)
    first = list(a)
    b.set_epoch(5)
    list(b)
    b.set_epoch(2)
    assert list(b) == first  # a resumed run draws what an uninterrupted one did
    a.set_epoch(3)
    assert list(a) != first


def test_fast_loader_class_balanced_in_one_and_two_processes():
    # one process: every batch of the epoch, as long as instance sampling's
    one = _balanced_loader(0, 1)
    instance = TensorLoader(_id_images(sum(TAIL)), _tail_targets(), 16, MEAN, STD, device="cpu",
                            train=True, seed=3)
    assert len(one) == len(instance)
    draws = []
    for epoch in range(10):
        one.set_epoch(epoch)
        draws += [c for _, targets in one for c in targets.tolist()]
    assert chi_square_uniform(draws, 10) < CHI2_9_DOF_P0001
    # two processes: each takes its own half of the same draws (239 images each, 29 batches of 8 and one of 7)
    one.set_epoch(4)
    order = one._shard().tolist()
    for rank in (0, 1):
        loader = _balanced_loader(rank, 2, batch_size=8)
        loader.set_epoch(4)
        assert [i for images, _ in loader for i in _ids(images)] == order[rank * 239:(rank + 1) * 239]


def test_classic_loader_class_balanced():
    targets = _tail_targets()
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(targets))
    dataset.targets = targets
    loader = classic_loader(dataset, 16, 0, seed=0, sampler="class_balanced")
    draws = []
    for epoch in range(10):
        loader.sampler.set_epoch(epoch)
        epoch_draws = [c for (batch,) in loader for c in batch.tolist()]
        assert len(epoch_draws) == len(targets)
        draws += epoch_draws
    assert chi_square_uniform(draws, 10) < CHI2_9_DOF_P0001


def test_list_benchmark_cache_loader_class_balanced_in_two_processes():
    from pathlib import Path

    from datasets.list_loaders import _Crops

    targets = torch.as_tensor(_tail_targets())
    shards = [_Crops(Path("unread"), targets, 8, 16, train=True, crop=False, flip=False, seed=0, rank=rank,
                     world_size=2, sampler="class_balanced") for rank in (0, 1)]
    draws = []
    for epoch in range(10):
        epoch_draws = [int(targets[i]) for shard in shards for i in shard.indices(epoch)]
        assert len(epoch_draws) == 2 * (len(targets) // 2)  # as long as instance sampling's epoch
        draws += epoch_draws
    assert chi_square_uniform(draws, 10) < CHI2_9_DOF_P0001


# ---------------------------------------------------------------- (g) DATASET.sampler sqrt and progressive (Kang et al.,
# ICLR 2020, eq. 1-2: class j drawn with probability n_j^q / sum_i n_i^q, q = 1/2 for sqrt; progressive:
# (1 - t/T) n_j / N + (t/T) / C in epoch t of T)

def chi_square(classes: list[int], probabilities: list[float]) -> float:
    """Pearson's statistic of the class counts in `classes` against `probabilities` (one per class)."""
    counts = torch.bincount(torch.as_tensor(classes), minlength=len(probabilities)).double()
    expected = len(classes) * torch.tensor(probabilities, dtype=torch.float64)
    return float(((counts - expected) ** 2 / expected).sum())


def _sqrt_probabilities() -> list[float]:
    roots = [math.sqrt(n) for n in TAIL]
    return [r / sum(roots) for r in roots]


def _progressive_probabilities(t: int, epochs: int) -> list[float]:
    return [(1 - t / epochs) * n / sum(TAIL) + (t / epochs) / len(TAIL) for n in TAIL]


def test_sqrt_draws_classes_in_proportion_to_the_square_root_of_their_size():
    from datasets import ClassSampler

    targets = _tail_targets()
    sampler = ClassSampler(targets, seed=0, sampler="sqrt")
    draws = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epoch_draws = [targets[i] for i in sampler]
        assert len(epoch_draws) == len(targets)
        draws += epoch_draws
    assert chi_square(draws, _sqrt_probabilities()) < CHI2_9_DOF_P0001
    # neither class-balanced nor instance sampling
    assert chi_square_uniform(draws, 10) > 10 * CHI2_9_DOF_P0001
    assert chi_square(draws, [n / sum(TAIL) for n in TAIL]) > 10 * CHI2_9_DOF_P0001
    # within a class, every image alike: the 200 images of class 0 (indices 0-199) each drawn about as often
    within = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        within += [i for i in sampler if i < TAIL[0]]
    per_image = torch.bincount(torch.tensor(within), minlength=TAIL[0]).double()
    expected = len(within) / TAIL[0]
    assert float(((per_image - expected) ** 2 / expected).sum()) < 300  # 199 degrees of freedom: p ~ 1e-5


@pytest.mark.parametrize("t", [0, 5, 9])
def test_progressive_moves_from_instance_to_class_balanced_over_the_epochs(t):
    from datasets import ClassSampler

    targets, epochs = _tail_targets(), 10
    draws = []
    for seed in range(20):  # one epoch's draws under 20 seeds
        sampler = ClassSampler(targets, seed=seed, sampler="progressive", epochs=epochs)
        sampler.set_epoch(t)
        draws += [targets[i] for i in sampler]
    assert chi_square(draws, _progressive_probabilities(t, epochs)) < CHI2_9_DOF_P0001
    if t == 0:  # the first epoch draws as instance sampling does (with replacement)
        assert _progressive_probabilities(0, epochs) == pytest.approx([n / sum(TAIL) for n in TAIL])
    else:  # and moves away from it
        assert chi_square(draws, _progressive_probabilities(0, epochs)) > 10 * CHI2_9_DOF_P0001


@pytest.mark.parametrize("sampler", ["sqrt", "progressive"])
def test_every_loader_draws_what_the_sampler_draws(sampler):
    from pathlib import Path

    from datasets import ClassSampler
    from datasets.list_loaders import _Crops

    targets, epochs, epoch = _tail_targets(), 10, 6
    reference = ClassSampler(targets, seed=3, sampler=sampler, epochs=epochs)
    reference.set_epoch(epoch)
    expected = list(reference)
    fast = TensorLoader(_id_images(len(targets)), targets, 16, MEAN, STD, device="cpu", train=True, seed=3,
                        sampler=sampler, epochs=epochs)
    fast.set_epoch(epoch)
    assert [i for images, _ in fast for i in _ids(images)] == expected
    dataset = torch.utils.data.TensorDataset(torch.arange(len(targets)))
    dataset.targets = targets
    classic = classic_loader(dataset, 16, 0, seed=3, sampler=sampler, epochs=epochs)
    classic.sampler.set_epoch(epoch)
    assert [i for (batch,) in classic for i in batch.tolist()] == expected
    crops = _Crops(Path("unread"), torch.as_tensor(targets), 8, 16, train=True, crop=False, flip=False, seed=3, rank=0,
                   world_size=1, sampler=sampler, epochs=epochs)
    assert crops.indices(epoch).tolist() == expected


def test_the_stream_seeds_are_one_function_of_seed_epoch_and_rank(monkeypatch):
    """The seeds that checkpoints resume with: their values never move, and the loaders take theirs from
    stream_seed (another function there gives another epoch)."""
    from datasets import loaders

    assert loaders.stream_seed(3, 7) == 3 * 100_003 + 7
    assert loaders.stream_seed(3, 7, rank=1) == (3 * 100_003 + 7) * 1_009 + 1
    base = loaders.TensorLoader(torch.zeros(40, 4, 4, 3, dtype=torch.uint8), torch.arange(40) % 4, 8, [0.5] * 3,
                                [0.25] * 3, device="cpu", train=True, seed=3)

    def order() -> list[int]:
        base.set_epoch(7)
        return torch.cat([labels for _, labels in base]).tolist()

    first = order()
    assert order() == first
    monkeypatch.setattr(loaders, "stream_seed", lambda seed, epoch, rank=None: 12345)
    assert order() != first
