"""BALMS's meta sampler (meta_sampler.py, DATASET.sampler meta): its sampler gradient against BALMS's own meta_forward,
its pieces (the Gumbel draw, the straight-through weights, the inner SGD step), its settings, and a stage-2 run."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from config import check, load_config
from conftest import ROOT, check_ok, read, run_main
from errors import ConfigError
from losses import BalancedSoftmax
from meta_sampler import (LEARNS_ON_VAL, InnerSGD, MetaBatch, check_processes, checkpoint_selection, draw,
                          initial_weights, inner_sgd, sampler_gradient, selection, sgd_step)
from reporting.runs import stage2_method
from test_main import check_error

_spec = importlib.util.spec_from_file_location("balms_meta_step", ROOT / "tools/reference/balms_meta_step.py")
REFERENCE = importlib.util.module_from_spec(_spec)  # its fixed inputs; BALMS itself is imported only by its main()
_spec.loader.exec_module(REFERENCE)

# Printed by tools/reference/balms_meta_step.py, which ran the official BALMS code
# (github.com/jiawei-ren/BalancedMetaSoftmax-Classification, commit 34a61e432881816c2da14d577d6ed63501288f5f:
# data/MetaSampler.py's SampleLearner draws, run_networks.py's model.meta_forward steps through `higher` 0.2.1 on
# torch 2.14.1, CPU, fp32), on REFERENCE.fixed_inputs()
BALMS_INITIAL = [-1.35402512550354, -1.091511845588684, -0.8453880548477173, -0.5952136516571045, -0.3029704689979553,
                 0.010669589042663574, 0.2492796778678894, 0.6143865585327148, 1.3540252447128296, 1.3540252447128296]
BALMS_DRAWN = [[84, 83, 86, 87, 92, 41, 48, 15, 83, 89, 79, 64],
               [93, 95, 67, 55, 35, 30, 93, 34, 87, 78, 42, 21],
               [93, 85, 55, 37, 8, 19, 14, 91, 57, 82, 18, 95]]
BALMS_GRADIENT = [
    [0.0018540885066613555, 0.00036793234176002443, 0.0027877558022737503, -0.0006749665481038392,
     -0.0006844612071290612, -0.0026220805011689663, -0.0011517730308696628, 0.0003983915376011282,
     0.00019033033458981663, 0.0002601555606815964],
    [0.0026216490659862757, -0.0026691704988479614, 0.0014632036909461021, 0.0006327100563794374,
     -0.0019717265386134386, 0.0005094613879919052, -4.24563477281481e-05, 0.0005577497067861259,
     -0.00043186426046304405, 4.428591637406498e-05],
    [0.0004244258743710816, 0.0013854715507477522, -0.0008602690068073571, 0.0009558116435073316,
     0.0005439387750811875, -0.0007020665798336267, 0.0002333382290089503, -0.0007699478301219642,
     -0.00012506006169132888, 1.1762525900849141e-05]]
BALMS_FINAL = [-1.382427453994751, -1.0935382843017578, -0.870097815990448, -0.5901177525520325, -0.2784544825553894,
               0.0313078835606575, 0.27026161551475525, 0.5940981507301331, 1.3528414964675903, 1.3298211097717285]


def test_meta_steps_give_balms_sampler_gradients():
    """Three steps as BALMS takes them: draw, meta step (sampler gradient, Adam), ordinary SGD step of the classifier.
    The second and third inner steps start from a momentum buffer and moved sampler weights."""
    inputs, r = REFERENCE.fixed_inputs(), REFERENCE
    weight = nn.Parameter(initial_weights(r.COUNTS, r.INIT_POW))
    torch.testing.assert_close(weight.detach(), torch.tensor(BALMS_INITIAL), rtol=1e-6, atol=1e-7)
    adam = torch.optim.Adam([weight], lr=r.SAMPLER_LR)
    classifier = nn.Linear(r.FEATURES, r.CLASSES)
    with torch.no_grad():
        classifier.weight.copy_(inputs["weight"])
        classifier.bias.copy_(inputs["bias"])
    sgd = torch.optim.SGD(classifier.parameters(), lr=r.LR, momentum=r.MOMENTUM, weight_decay=r.WEIGHT_DECAY)
    criterion, targets = BalancedSoftmax(r.COUNTS), inputs["targets"]
    for step, (meta_features, meta_labels) in enumerate(inputs["meta"]):
        drawn = draw(weight, targets, r.BATCH, torch.Generator().manual_seed(r.GUMBEL_SEED + step))
        assert drawn.indices.tolist() == BALMS_DRAWN[step]
        features, labels = inputs["features"][drawn.indices], targets[drawn.indices]
        named = dict(classifier.named_parameters())
        batch = MetaBatch(classifier, {name: p.detach() for name, p in named.items()}, inner_sgd(sgd, named),
                          criterion, targets, drawn, features, labels, meta_features, meta_labels)
        weight.grad = sampler_gradient(weight, batch)
        torch.testing.assert_close(weight.grad, torch.tensor(BALMS_GRADIENT[step]), rtol=1e-5, atol=1e-9)
        adam.step()
        sgd.zero_grad()
        criterion(classifier(features), labels).backward()
        sgd.step()
    torch.testing.assert_close(weight.detach(), torch.tensor(BALMS_FINAL), rtol=1e-6, atol=1e-7)


def test_the_gradient_moves_when_the_meta_set_does():
    """The check above fails when the method changes: another meta batch gives another gradient."""
    inputs, r = REFERENCE.fixed_inputs(), REFERENCE
    classifier = nn.Linear(r.FEATURES, r.CLASSES)
    named = dict(classifier.named_parameters())
    sgd = torch.optim.SGD(classifier.parameters(), lr=r.LR, momentum=r.MOMENTUM)
    weight, targets = initial_weights(r.COUNTS, r.INIT_POW), inputs["targets"]
    drawn = draw(weight, targets, r.BATCH, torch.Generator().manual_seed(0))

    def gradient(meta, loss=BalancedSoftmax(r.COUNTS)):
        return sampler_gradient(weight, MetaBatch(classifier, {k: v.detach() for k, v in named.items()},
                                                  inner_sgd(sgd, named), loss, targets,
                                                  drawn, inputs["features"][drawn.indices], targets[drawn.indices],
                                                  *meta))
    assert not torch.allclose(gradient(inputs["meta"][0]), gradient(inputs["meta"][1]))
    # the inner step weighs the run's loss's own per-image form: the logit-adjusted loss at tau 1 is Balanced
    # Softmax, at tau 0 cross-entropy, another step
    from losses import LogitAdjusted

    torch.testing.assert_close(gradient(inputs["meta"][0], LogitAdjusted(r.COUNTS, 1.0)), gradient(inputs["meta"][0]))
    assert not torch.allclose(gradient(inputs["meta"][0], LogitAdjusted(r.COUNTS, 0.0)), gradient(inputs["meta"][0]))


@pytest.mark.parametrize("init_pow, balanced", [(0.0, "images"), (1.0, "classes")])
def test_initial_weights_draw_every_image_or_every_class_alike(init_pow, balanced):
    counts = torch.tensor([50, 20, 5, 1])
    rates = torch.sigmoid(initial_weights(counts, init_pow))
    per_class = rates * counts  # a class's share of the draws
    torch.testing.assert_close(rates if balanced == "images" else per_class / per_class.sum(),
                               torch.full((4,), 0.5) if balanced == "images" else torch.full((4,), 0.25))


def test_draws_follow_the_sampling_weights():
    """Image i is drawn with probability sigmoid(w[y_i]) / sum_j sigmoid(w[y_j]): class counts against that
    (chi-square, 3 degrees of freedom)."""
    targets = torch.repeat_interleave(torch.arange(4), torch.tensor([40, 30, 20, 10]))
    weight = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    drawn = draw(weight, targets, 20_000, torch.Generator().manual_seed(0))
    observed = torch.bincount(targets[drawn.indices], minlength=4).double()
    mass = torch.tensor([40, 30, 20, 10]) * torch.sigmoid(weight)
    expected = 20_000 * (mass / mass.sum()).double()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 20, f"chi2 {chi2:.1f} with 3 degrees of freedom"  # p ~ 2e-4


def test_straight_through_is_one_hot_forward_and_the_soft_samples_gradient_backward():
    """selection() against torch's own F.gumbel_softmax(hard=True) on the same noise, BALMS's draw: the same images,
    value 1, and the same gradient of a weighted sum of the chosen entries."""
    targets = torch.repeat_interleave(torch.arange(5), torch.tensor([9, 6, 4, 2, 1]))
    weight = torch.tensor([0.3, -0.2, 0.1, 0.7, -1.0], requires_grad=True)
    coefficients = torch.linspace(0.5, 2.0, 8)
    torch.manual_seed(7)
    hard = F.gumbel_softmax(torch.sigmoid(weight)[targets].log().expand(8, -1), hard=True, dim=-1)
    chosen = hard.detach().nonzero()[:, 1]
    (theirs,) = torch.autograd.grad(((hard.detach() * hard).sum(1) * coefficients).sum(), weight)
    drawn = draw(weight, targets, 8, torch.Generator().manual_seed(7))
    assert torch.equal(drawn.indices, chosen)
    ours = selection(weight, targets, drawn)
    torch.testing.assert_close(ours, torch.ones(8))
    torch.testing.assert_close(torch.autograd.grad((ours * coefficients).sum(), weight)[0], theirs)


@pytest.mark.parametrize("momentum, dampening, nesterov, weight_decay, stepped_before", [
    (0.0, 0.0, False, 0.0, False),
    (0.9, 0.0, False, 5e-4, False),  # the first step: the buffer is the gradient
    (0.9, 0.0, False, 5e-4, True),   # later: momentum x buffer + gradient
    (0.9, 0.1, False, 1e-3, True),
    (0.9, 0.0, True, 5e-4, True),
])
def test_inner_step_equals_torch_sgd(momentum, dampening, nesterov, weight_decay, stepped_before):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.3, momentum=momentum, dampening=dampening,
                                nesterov=nesterov, weight_decay=weight_decay)
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    if stepped_before:
        F.cross_entropy(layer(x[:8]), y[:8]).backward()
        optimizer.step()
        optimizer.zero_grad()
    named = dict(layer.named_parameters())
    settings = inner_sgd(optimizer, named)
    has_buffer = settings.buffers["weight"] is not None
    assert isinstance(settings, InnerSGD) and has_buffer == (stepped_before and momentum > 0)
    params = {name: p.detach().clone() for name, p in named.items()}
    F.cross_entropy(layer(x), y).backward()
    ours = sgd_step(params, {name: p.grad for name, p in named.items()}, settings)
    optimizer.step()
    for name, p in named.items():
        torch.testing.assert_close(ours[name], p.detach(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------- settings
def _config(*overrides: str):
    return load_config(ROOT / "configs.yaml", ["DATASET.sampler", "meta", "TRAIN.stage2_from", "s1.pt",
                                               "LOSS.name", "BalancedSoftmax", *overrides])


@pytest.mark.parametrize("data", [[], ["DATASET.name", "PlacesLT", "DATASET.img_size", "224", "DATASET.aug_info",
                                      "[RandomResizedCrop]"]])
def test_meta_sampler_settings_pass_check(data):
    check(_config(*data, "META_SAMPLER.lr", "0.05", "META_SAMPLER.batch_size", "256", "META_SAMPLER.init_pow", "1"))


@pytest.mark.parametrize("overrides, named", [
    (["TRAIN.stage2_from", "null"], "without TRAIN.stage2_from"),
    (["LOSS.name", "CrossEntropyLoss"], "LOSS.name CrossEntropyLoss"),
    (["OPTIMIZER.name", "AdamW", "OPTIMIZER.params", "{}"], "OPTIMIZER.name AdamW"),
    (["DATASET.loader", "classic"], "DATASET.loader classic"),
    (["DATASET.name", "iNat2018", "DATASET.img_size", "224", "DATASET.aug_info", "[RandomResizedCrop]"],
     "on iNat2018"),
    (["TRAIN.grad_accum_steps", "2"], "TRAIN.grad_accum_steps 2"),
    (["META_SAMPLER.lr", "0"], "META_SAMPLER.lr"),
    (["META_SAMPLER.batch_size", "0"], "META_SAMPLER.batch_size"),
    (["META_SAMPLER.batch_size", "1.5"], "META_SAMPLER.batch_size"),
    (["META_SAMPLER.init_pow", "-1"], "META_SAMPLER.init_pow"),
])
def test_a_meta_sampler_that_would_not_run_as_balms_is_refused(overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        check(_config(*overrides))


def test_the_meta_sampler_is_refused_under_several_processes_in_one_line():
    """Each process would differentiate a step on its shard of the batch, not BALMS's step on the whole batch."""
    check_processes(_config(), 1)
    check_processes(_config("DATASET.sampler", "instance"), 2)
    with pytest.raises(ConfigError, match=r"^DATASET\.sampler meta runs in one process, not 2: .*launch it as one "
                                          r"process \(python main\.py, not torchrun or accelerate launch\)$"):
        check_processes(_config(), 2)


@pytest.mark.slow
def test_main_refuses_the_meta_sampler_under_two_processes(cifar_root, tmp_path):
    """Before any data or stage-1 file is read: the refusal is each process's one line."""
    proc = run_main(cifar_root, tmp_path, "DATASET.sampler", "meta", "LOSS.name", "BalancedSoftmax",
                    "TRAIN.stage2_from", str(tmp_path / "stage1.pt"), nproc=2, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0
    assert proc.stderr.count("error: DATASET.sampler meta runs in one process, not 2: ") == 2, proc.stderr[-3000:]
    assert "does not exist" not in proc.stderr  # refused before the stage-1 file is looked for


@pytest.mark.parametrize("key, value", [("META_SAMPLER.lr", "0.1"), ("META_SAMPLER.batch_size", "64"),
                                        ("META_SAMPLER.init_pow", "1.0")])
def test_meta_sampler_keys_without_the_meta_sampler_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} .* has no effect while DATASET.sampler is instance: set "
                                          "DATASET.sampler meta"):
        load_config(ROOT / "configs.yaml", [key, value])


# ---------------------------------------------------------------------------------------------------- end to end
STAGE1_DATA = ["DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "10", "DATASET.val_per_class", "10"]


@pytest.mark.slow
def test_stage2_with_the_meta_sampler_trains_the_classifier_only(cifar_root, tmp_path):
    check_ok(run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.epochs", "1", "LOSS.name", "BalancedSoftmax",
                      "DEFAULT.exp_name", "BS"))
    stage1 = tmp_path / "CIFAR10LT" / "resnet32" / "BS"
    proc = run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.epochs", "2", "TRAIN.stage2_from", str(stage1),
                    "DATASET.sampler", "meta", "LOSS.name", "BalancedSoftmax", "META_SAMPLER.batch_size", "20",
                    "META_SAMPLER.lr", "0.5", "DEFAULT.exp_name", "meta")
    check_ok(proc)
    assert "meta sampling" in proc.stdout and proc.stdout.count("meta sampler, epoch") == 2, proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("meta sampler, epoch 2"))
    shares = [float(share) for share in line.split("probability ")[1].split(", ")]
    assert len(shares) == 10 and sum(shares) == pytest.approx(1, abs=0.01)
    folder = tmp_path / "CIFAR10LT" / "resnet32" / "meta"
    before = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)["model"]
    after = torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)["model"]
    for name, value in before.items():  # the backbone's weights and BatchNorm statistics
        if not name.startswith("fc."):
            assert torch.equal(after[f"model.{name}"], value), name
    assert read(folder / "results-seed0.json")["stage1"]["loss"] == "BalancedSoftmax"


@pytest.mark.slow
def test_stage2_with_the_meta_sampler_needs_stage1(cifar_root, tmp_path):
    line = check_error(run_main(cifar_root, tmp_path, "DATASET.sampler", "meta", "LOSS.name", "BalancedSoftmax"))
    assert "without TRAIN.stage2_from" in line


LIST_DATA = ["DATASET.strict_sizes", "false", "DATASET.img_size", "32", "DATASET.aug_info",
             "[RandomResizedCrop, RandomHorizontalFlip]"]


@pytest.mark.parametrize("data, sampler, selected_by", [
    (["DATASET.name", "ImageNetLT", *LIST_DATA], "meta", LEARNS_ON_VAL),
    (["DATASET.name", "PlacesLT", *LIST_DATA], "meta", LEARNS_ON_VAL),
    ([], "meta", "val bcr"),  # CIFAR: the meta set is the training split, val stays held out
    (["DATASET.name", "ImageNetLT", *LIST_DATA], "instance", "val bcr"),
])
def test_where_the_meta_sampler_learns_on_val_the_run_selects_its_last_epoch(data, sampler, selected_by):
    cfg = _config(*data, "DATASET.sampler", sampler)
    assert checkpoint_selection(cfg, "val") == selected_by
    assert checkpoint_selection(cfg, "test") == "test bcr"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*published:UserWarning")
def test_a_meta_sampler_run_on_imagenet_lt_reports_its_last_epoch_not_val(tmp_path):
    """There the meta set is the val list: the results say the last epoch was kept, and it was."""
    from fake_lists import LIST_RUN, make_lists

    make_lists(tmp_path / "data")
    data = [*LIST_RUN, "DATASET.cache_dir", str(tmp_path / "cache"), "DATASET.batch_size", "64"]
    check_ok(run_main(tmp_path / "data", tmp_path, *data, "TRAIN.epochs", "1", "LOSS.name", "BalancedSoftmax",
                      "DEFAULT.exp_name", "BS"))
    proc = run_main(tmp_path / "data", tmp_path, *data, "TRAIN.epochs", "3", "DEFAULT.exp_name", "meta",
                    "TRAIN.stage2_from", str(tmp_path / "ImageNetLT" / "resnet32" / "BS"), "DATASET.sampler", "meta",
                    "LOSS.name", "BalancedSoftmax", "META_SAMPLER.batch_size", "16", "OPTIMIZER.lr", "0.5")
    check_ok(proc)
    results = read(tmp_path / "ImageNetLT" / "resnet32" / "meta" / "results-seed0.json")
    assert results["selected_by"] == LEARNS_ON_VAL and results["best_epoch"] == 3
    assert results["test"] == results["test_last_epoch"]
    assert f"checkpoint by {LEARNS_ON_VAL}" in proc.stdout


def test_the_report_names_a_meta_sampler_run_for_balms():
    config = {"TRAIN": {"stage2_classifier": "retrain"}, "DATASET": {"sampler": "meta"},
              "LOSS": {"name": "BalancedSoftmax"}}
    assert stage2_method(config) == "BALMS meta sampler"


class _Tiny(nn.Module):
    """A frozen feature map and a linear head, the interface of stage2.Stage2Model that the loader reads."""

    def __init__(self, side: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, 6)).requires_grad_(False)
        self.fc = nn.Linear(6, classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(self.features(x))


def test_the_loader_gives_the_base_loaders_batches_and_leaves_the_classifier_to_the_step(fresh_accelerate):
    """As many batches as the TensorLoader, of its sizes, whose labels are the drawn images'; the meta step moves
    the sampler's weights and neither the classifier nor its optimizer's state."""
    from accelerate import Accelerator

    from datasets import TensorLoader
    from meta_sampler import MetaSampledLoader

    accelerator = Accelerator(cpu=True, mixed_precision="no")
    counts = [20, 10, 4, 2]
    targets = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    images = torch.randint(0, 256, (len(targets), 8, 8, 3), dtype=torch.uint8)
    base = TensorLoader(images, targets, 8, [0.5] * 3, [0.25] * 3, device="cpu", train=True, crop=True, flip=True)
    torch.manual_seed(0)
    model = _Tiny()
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    criterion = BalancedSoftmax(counts)
    loader = MetaSampledLoader(base, base, model, optimizer, criterion, accelerator, counts, lr=0.1, meta_batch=8,
                               init_pow=0.0, seed=0)
    loader.set_epoch(1)
    start = loader.weight.detach().clone()
    sizes, before = [], None

    def snapshot():  # the classifier and its momentum buffers
        return [p.detach().clone() for p in model.fc.parameters()] + \
            [optimizer.state[p]["momentum_buffer"].clone() for p in model.fc.parameters() if p in optimizer.state]

    for x, y in loader:  # the meta step has run on this batch
        if before is not None:
            assert all(torch.equal(a, b) for a, b in zip(snapshot(), before, strict=True))
        assert set(y.tolist()) <= set(range(4)) and x.shape[1:] == (3, 8, 8)
        sizes.append(len(y))
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        before = snapshot()
    assert sizes == [len(batch) for _, batch in base] == [8, 8, 8, 8, 4]
    assert not torch.equal(loader.weight.detach(), start)


@pytest.mark.filterwarnings("ignore:.*published:UserWarning")  # the generated lists are not ImageNet-LT's size
def test_on_imagenet_lt_the_meta_batches_come_from_the_val_list(tmp_path, fresh_accelerate):
    """As BALMS does there: the meta set is the val list (validation images), centre-cropped as evaluation crops
    them; the training batches are drawn from the train list and cropped as the fast loader's workers crop them."""
    from accelerate import Accelerator

    from datasets import build_loaders, build_splits
    from fake_lists import LIST_RUN, LONG_TAIL, make_lists
    from meta_sampler import with_meta_sampler

    make_lists(tmp_path / "data")
    cfg = _config("DATASET.datadir", str(tmp_path / "data"), *LIST_RUN[:8], "DATASET.num_workers", "0",
                  "DATASET.cache_dir", str(tmp_path / "cache"), "DATASET.batch_size", "64",
                  "META_SAMPLER.batch_size", "16")
    check(cfg)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    splits = build_splits(cfg.DATASET, 0)
    loaders = build_loaders(cfg.DATASET, splits, 0, accelerator)
    model = _Tiny(side=32, classes=8)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    loader = with_meta_sampler(cfg, loaders, loaders["train"], model, optimizer, BalancedSoftmax(LONG_TAIL),
                               accelerator, LONG_TAIL)
    assert torch.equal(loader.meta_images.targets, torch.as_tensor(splits["val"].targets))
    assert torch.equal(loader.train_images.targets, torch.as_tensor(splits["train"].targets))
    start = loader.weight.detach().clone()
    sizes = [len(y) for x, y in loader if x.shape[1:] == (3, 32, 32)]
    assert sizes == [64] * 5 + [56]  # the fast loader's: 376 images in batches of 64
    assert not torch.equal(loader.weight.detach(), start)


def _tiny_meta_loader(model, optimizer, seed=0):
    from accelerate import Accelerator

    from datasets import TensorLoader
    from meta_sampler import MetaSampledLoader

    counts = [20, 10, 4, 2]
    targets = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    images = torch.randint(0, 256, (len(targets), 8, 8, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    base = TensorLoader(images, targets, 8, [0.5] * 3, [0.25] * 3, device="cpu", train=True, crop=True, flip=True)
    return MetaSampledLoader(base, base, model, optimizer, BalancedSoftmax(counts), Accelerator(cpu=True), counts,
                             lr=0.1, meta_batch=8, init_pow=0.0, seed=seed)


def test_a_restored_sampler_continues_as_the_one_that_saved_its_state(fresh_accelerate):
    """The state a checkpoint keeps (weights and Adam's moments) makes a new loader's next epoch the saving loader's:
    the same drawn labels and the same weights after it; without it the new loader's epoch differs."""
    from meta_sampler import restore_sampler, sampler_state

    torch.manual_seed(0)
    model = _Tiny()
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    saving = _tiny_meta_loader(model, optimizer)
    saving.set_epoch(0)
    for _ in saving:
        pass
    saved = sampler_state(saving)

    def next_epoch(loader):
        loader.set_epoch(1)
        labels = torch.cat([y for _, y in loader])
        return labels, loader.weight.detach().clone()

    restored = _tiny_meta_loader(model, optimizer)
    assert restore_sampler(restored, saved) is None
    fresh = _tiny_meta_loader(model, optimizer)
    labels, weight = next_epoch(saving)
    labels_restored, weight_restored = next_epoch(restored)
    assert torch.equal(labels, labels_restored) and torch.equal(weight, weight_restored)
    assert not torch.equal(next_epoch(fresh)[1], weight)
    assert restore_sampler(_tiny_meta_loader(model, optimizer), None).startswith("the checkpoint holds no meta")
    assert sampler_state(object()) is None and restore_sampler(object(), saved) is None
