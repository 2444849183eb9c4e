"""Stage 2 (stage2.py, TRAIN.stage2_from): a stage-1 model frozen but for its classifier, which is re-trained (cRT,
Balanced Softmax re-training) or rescaled (LWS); the checks on the stage-1 checkpoint; the rows report.py gives."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from config import check, load_config
from conftest import ROOT, check_ok, read, run_main, run_script
from errors import ConfigError
from models import build_model
from optim import build_optimizer
from posthoc import linear_form
from stage2 import ScaledClassifier, Stage1, Stage2Model, freeze_for_stage2, stage1_note
from test_main import check_error

# CIFAR-10-LT from the cifar_root fixture: 10 validation images a class, then 90 down to 9 training images
STAGE1_DATA = ["DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "10", "DATASET.val_per_class", "10"]


@pytest.fixture(scope="module")
def stage1(cifar_root, tmp_path_factory):
    """A one-epoch cross-entropy run (seed 0), its run folder."""
    savedir = tmp_path_factory.mktemp("stage1")
    check_ok(run_main(cifar_root, savedir, *STAGE1_DATA, "TRAIN.epochs", "1", "DEFAULT.exp_name", "CE"))
    return savedir / "CIFAR10LT" / "resnet32" / "CE"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet32", 10, False, 32)[0]


def test_lws_starts_as_the_identity():
    model = _model().eval()
    images = torch.randn(8, 3, 32, 32)
    expected = model(images)
    lws = Stage2Model(model, "lws").eval()
    head = lws.get_classifier()
    assert isinstance(head, ScaledClassifier) and torch.equal(head.scales, torch.ones(10))
    torch.testing.assert_close(lws(images), expected, rtol=0, atol=0)
    assert [name for name, p in lws.named_parameters() if p.requires_grad] == ["model.fc.scales"]
    with torch.no_grad():
        head.scales[3] = 2.0
    # the classifier it computes, as tau-normalisation reads it: row 3 of the weight and the bias doubled
    form = linear_form(head)
    torch.testing.assert_close(form.weight[3], 2 * head.linear.weight[3])
    torch.testing.assert_close(form.bias[3], 2 * head.linear.bias[3])
    torch.testing.assert_close(lws(images)[:, 3], 2 * expected[:, 3])


@pytest.mark.parametrize("classifier", ["retrain", "lws"])
def test_in_training_mode_only_the_classifier_trains(classifier):
    model = Stage2Model(_model(), classifier)
    model.train()
    assert model.get_classifier().training
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))  # stage 1's statistics
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained == (["model.fc.weight", "model.fc.bias"] if classifier == "retrain" else ["model.fc.scales"])


@pytest.mark.slow
@pytest.mark.parametrize("classifier", ["retrain", "lws"])
def test_a_frozen_backbone_does_not_change_in_stage2(stage1, cifar_root, tmp_path, classifier):
    proc = run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.epochs", "2", "TRAIN.stage2_from", str(stage1),
                    "TRAIN.stage2_classifier", classifier, "DATASET.sampler", "class_balanced",
                    "DEFAULT.exp_name", "s2")
    check_ok(proc)
    assert f"stage 2 from {stage1 / 'model-seed0-best.pt'} (CrossEntropyLoss, epoch 1)" in proc.stdout, proc.stdout
    folder = tmp_path / "CIFAR10LT" / "resnet32" / "s2"
    before = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)["model"]
    after = torch.load(folder / "model-seed0.pt", map_location="cpu", weights_only=False)["model"]
    for name, value in before.items():  # weights and BatchNorm statistics alike
        if not name.startswith("fc."):
            assert torch.equal(after[f"model.{name}"], value), name
    if classifier == "retrain":
        assert not torch.equal(after["model.fc.weight"], before["fc.weight"])
    else:
        assert torch.equal(after["model.fc.linear.weight"], before["fc.weight"])
        assert torch.equal(after["model.fc.linear.bias"], before["fc.bias"])
        assert not torch.equal(after["model.fc.scales"], torch.ones(10))
    results = read(folder / "results-seed0.json")
    assert results["stage1"]["loss"] == "CrossEntropyLoss" and results["stage1"]["epoch"] == 1
    # evaluate.py rebuilds the stage-2 model from its checkpoint: the run's own test scores
    evaluated = run_script("evaluate.py", cifar_root, str(folder), "--out", str(tmp_path / "eval"))
    check_ok(evaluated)
    again = read(tmp_path / "eval" / "results-seed0.json")
    assert again["test"]["bcr"] == results["test"]["bcr"] and again["stage1"] == results["stage1"]


def _stage2_cfg(path, *overrides):
    cfg = load_config(ROOT / "configs.yaml", ["MODEL.name", "resnet32", *STAGE1_DATA, "TRAIN.stage2_from", str(path),
                                              *overrides])
    check(cfg)
    return cfg


def _refusal(cfg) -> str:
    with pytest.raises(ConfigError) as error:
        freeze_for_stage2(_model(), cfg, 10)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.slow
def test_a_missing_stage1_checkpoint_is_refused(stage1, tmp_path):
    assert "does not exist" in _refusal(_stage2_cfg(tmp_path / "nothing.pt"))
    assert "holds no model-seed5-best.pt for seed 5" in _refusal(_stage2_cfg(stage1, "DEFAULT.seed", "5"))


@pytest.mark.slow
@pytest.mark.parametrize("overrides, both_sides", [
    (["DATASET.name", "CIFAR100LT"], "is of another data set: DATASET.name CIFAR10LT there, CIFAR100LT in this run"),
    (["DATASET.imbalance_factor", "20"], "was trained on other images: DATASET.imbalance_factor 10 there, 20 in this run"),
    (["DEFAULT.data_seed", "3"], "data seed (DEFAULT.data_seed, else DEFAULT.seed) 0 there, 3 in this run"),
    (["DATASET.draw", "ldam"], "was trained on other images: DATASET.draw torch there, ldam in this run"),
])
def test_a_stage1_checkpoint_of_other_data_is_refused_naming_both_sides(stage1, overrides, both_sides):
    assert both_sides in _refusal(_stage2_cfg(stage1, *overrides))


@pytest.mark.slow
def test_a_stage1_checkpoint_with_another_number_of_classes_is_refused(stage1, tmp_path):
    state = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)
    state["model"]["fc.weight"], state["model"]["fc.bias"] = state["model"]["fc.weight"][:5], state["model"]["fc.bias"][:5]
    torch.save(state, tmp_path / "five.pt")
    assert "has 5 classes, this run's CIFAR10LT has 10" in _refusal(_stage2_cfg(tmp_path / "five.pt"))


@pytest.mark.slow
def test_a_stage2_checkpoint_is_no_stage1(stage1, tmp_path):
    state = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)
    state["config"]["TRAIN"]["stage2_from"] = "elsewhere.pt"
    torch.save(state, tmp_path / "stage2.pt")
    assert "is itself a stage-2 run (from elsewhere.pt)" in _refusal(_stage2_cfg(tmp_path / "stage2.pt"))


@pytest.mark.slow
def test_main_stops_with_one_line_on_a_missing_stage1(cifar_root, tmp_path):
    proc = run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.stage2_from", str(tmp_path / "nothing.pt"))
    assert "TRAIN.stage2_from" in check_error(proc) and "does not exist" in proc.stderr


def test_stage2_classifier_without_stage2_from_is_refused():
    with pytest.raises(ConfigError, match="TRAIN.stage2_classifier lws has no effect while TRAIN.stage2_from is null"):
        load_config(ROOT / "configs.yaml", ["TRAIN.stage2_classifier", "lws"])


@pytest.mark.parametrize("recipe", ["crt", "lws", "bs_retrain"])
def test_stage2_trains_its_classifier_at_its_own_lr_after_a_stage1_recipe_with_a_classifier_lr(recipe):
    """places_lt_stage1.yaml sets OPTIMIZER.classifier_lr 0.1 for its new head; in stage 2 only the head trains,
    and at the stage-2 lr."""
    cfg = load_config([ROOT / "configs.yaml", ROOT / "recipes" / "places_lt_stage1.yaml",
                       ROOT / "recipes" / f"{recipe}.yaml"], ["OPTIMIZER.lr", "0.05", "TRAIN.stage2_from", "s1.pt"])
    optimizer = build_optimizer(cfg.OPTIMIZER, Stage2Model(_model(), cfg.TRAIN.stage2_classifier))
    assert [group["lr"] for group in optimizer.param_groups] == [0.05]


def test_a_classifier_lr_in_stage2_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="OPTIMIZER.classifier_lr 0.3 has no effect while TRAIN.stage2_from is set"):
        load_config(ROOT / "configs.yaml", ["TRAIN.stage2_from", "s1.pt", "OPTIMIZER.classifier_lr", "0.3"])


def test_stage2_does_not_demand_the_pretrained_weights_that_stage1_started_from(stage1, cifar_root, tmp_path):
    """A stage-1 recipe's MODEL.pretrained (and its file) carries into stage 2, which overwrites every weight with
    stage 1's: the file need not exist, and nothing is fetched (timm has no pretrained resnet32 to fetch)."""
    cfg = _stage2_cfg(stage1, "MODEL.pretrained", "true", "MODEL.pretrained_file", str(tmp_path / "gone.pth"))
    assert cfg.MODEL.pretrained
    proc = run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.epochs", "1", "TRAIN.stage2_from", str(stage1),
                    "MODEL.pretrained", "true", "DEFAULT.exp_name", "s2-pretrained")
    check_ok(proc)


def test_a_stage2_run_is_evaluated_and_resumed_after_its_stage1_files_moved(stage1, cifar_root, tmp_path):
    """Its checkpoints hold every weight and the stage-1 provenance as data: once stage 1's folder has moved,
    evaluate.py still reads the run, and the run resumes, from the new path too, without reading stage 1."""
    import hashlib
    import shutil

    shutil.copytree(stage1, tmp_path / "s1")
    run = [*STAGE1_DATA, "TRAIN.epochs", "1", "TRAIN.stage2_classifier", "lws", "DEFAULT.exp_name", "s2"]
    check_ok(run_main(cifar_root, tmp_path, *run, "TRAIN.stage2_from", str(tmp_path / "s1")))
    folder = tmp_path / "CIFAR10LT" / "resnet32" / "s2"
    results = read(folder / "results-seed0.json")
    source = tmp_path / "s1" / "model-seed0-best.pt"
    assert results["stage1"] == {"checkpoint": str(source), "loss": "CrossEntropyLoss", "epoch": 1,
                                 "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    best = torch.load(folder / "model-seed0-best.pt", map_location="cpu", weights_only=True)
    assert best["stage1"] == results["stage1"] and best["data"]["num_per_cls"] == results["num_per_cls"]
    shutil.move(tmp_path / "s1", tmp_path / "s1-moved")

    check_ok(run_script("evaluate.py", cifar_root, str(folder)))
    assert read(folder / "evaluation" / "results-seed0.json")["stage1"] == results["stage1"]
    (folder / "results-seed0.json").unlink()  # the run is unfinished again: it resumes after its last epoch
    resumed = run_main(cifar_root, tmp_path, *run, "TRAIN.stage2_from", str(tmp_path / "s1-moved"))
    check_ok(resumed)
    assert "resuming" in resumed.stdout
    assert read(folder / "results-seed0.json")["stage1"] == results["stage1"]


@pytest.mark.parametrize("recipe, stage1_loss, noted", [
    ("balms_meta", "CrossEntropyLoss", False),  # BALMS as its authors run it
    ("bs_retrain", "CrossEntropyLoss", False),  # its matched baseline
    ("balms_meta", "BalancedSoftmax", True),
    ("bs_retrain", "BalancedSoftmax", True),
    ("bs_retrain", "LDAM", True),
    ("crt", "BalancedSoftmax", False),          # cRT is not BALMS: from any stage 1, without a word
    ("balms_meta", None, False),                # a checkpoint that does not record its loss: nothing to say
])
def test_a_balms_stage2_from_a_stage1_other_than_cross_entropy_is_noted(recipe, stage1_loss, noted):
    cfg = load_config([ROOT / "configs.yaml", ROOT / "recipes" / "balms.yaml", ROOT / "recipes" / f"{recipe}.yaml"],
                      ["TRAIN.stage2_from", "s1.pt"])
    note = stage1_note(cfg, Stage1("/runs/s1/model-seed0-best.pt", stage1_loss, 3))
    if noted:
        assert note.startswith("note: ") and f"from a {stage1_loss} stage 1" in note and "CrossEntropyLoss" in note
        assert "\n" not in note
    else:
        assert note is None


def test_main_says_when_balanced_softmax_retraining_starts_from_a_balanced_softmax_stage1(stage1, cifar_root,
                                                                                          tmp_path):
    """The run still trains; the one line comes after the stage-2 line. The stage-1 file is the CE run's, its saved
    config's loss changed to Balanced Softmax (as a Balanced Softmax stage 1 would record it)."""
    state = torch.load(stage1 / "model-seed0-best.pt", map_location="cpu", weights_only=False)
    state["config"]["LOSS"]["name"] = "BalancedSoftmax"
    torch.save(state, tmp_path / "bs-stage1.pt")
    proc = run_main(cifar_root, tmp_path, *STAGE1_DATA, "TRAIN.epochs", "1", "TRAIN.stage2_from",
                    str(tmp_path / "bs-stage1.pt"), "LOSS.name", "BalancedSoftmax", "DEFAULT.exp_name", "s2-bs")
    check_ok(proc)
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("stage 2 from "))
    assert lines[at + 1].startswith("note: Balanced Softmax re-training starts here from a BalancedSoftmax stage 1")
    assert (tmp_path / "CIFAR10LT" / "resnet32" / "s2-bs" / "results-seed0.json").is_file()


# ------------------------------------------------------------------------ stage 2 after LDAM-DRW (a normed head)
def _after_ldam_drw(recipe: str, *overrides: str):
    return load_config([ROOT / "configs.yaml", ROOT / "recipes" / "ldam_drw.yaml", ROOT / "recipes" / f"{recipe}.yaml"],
                       ["TRAIN.stage2_from", "s1.pt", *overrides])


def test_crt_after_ldam_drw_retrains_a_linear_head_on_plain_cross_entropy():
    """A normed head drawn afresh gives cosine logits in [-1, 1], which cross-entropy hardly trains: cRT after
    LDAM-DRW is refused until the head is linear, and then its loss is crt.yaml's plain cross-entropy, not DRW."""
    with pytest.raises(ConfigError, match="set MODEL.classifier linear"):
        check(_after_ldam_drw("crt"))
    with pytest.raises(ConfigError, match="cosine logits in .-1, 1. CrossEntropyLoss hardly trains.*set "
                                          "MODEL.classifier linear"):
        check(_after_ldam_drw("crt", "MODEL.classifier_init", "model"))
    cfg = _after_ldam_drw("crt", "MODEL.classifier", "linear")
    check(cfg)
    assert (cfg.LOSS.name, cfg.LOSS.reweight, cfg.MODEL.classifier, cfg.MODEL.classifier_init) == (
        "CrossEntropyLoss", "none", "linear", "pytorch")
    check(_after_ldam_drw("crt", "LOSS.name", "LDAM", "MODEL.classifier_init", "model"))  # LDAM scales its cosines


def test_lws_after_ldam_drw_keeps_the_normed_head_and_scales_its_cosines():
    cfg = _after_ldam_drw("lws")
    check(cfg)
    assert (cfg.MODEL.classifier, cfg.LOSS.reweight, cfg.TRAIN.stage2_classifier) == ("normed", "none", "lws")
    torch.manual_seed(0)
    model = Stage2Model(build_model("resnet32", 10, False, 32, classifier="normed")[0], "lws")
    head = model.get_classifier()
    assert linear_form(head).bias is None  # the normed head has none, as nn.Linear(bias=False)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(images)
        head.scales.mul_(torch.arange(1.0, 11.0))
        torch.testing.assert_close(model(images), before * torch.arange(1.0, 11.0))
    assert before.abs().max() <= 1  # cosines
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["model.fc.scales"]
