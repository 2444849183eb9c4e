"""Post-hoc corrections (posthoc.py, evaluate.py --logit-adjust and --tau-norm): logit adjustment at tau 0 gives the
plain logits, tau-normalisation drops the bias, tau is chosen on validation where there is one and written down, each
correction writes its own results, and report.py shows them as rows beside the plain one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from checkpoint import sha256
from conftest import check_ok, read, run_main, run_script
from errors import ConfigError
from models.heads import NormedLinear
from posthoc import adjusted_logits, logit_adjust, parse_taus, tau_normalise
from report import report
from stage2 import ScaledClassifier, Stage2Model

COUNTS = [90, 50, 20, 5]
DATA = ["DATASET.imbalance_type", "exp", "DATASET.imbalance_factor", "10"]


def _head():
    torch.manual_seed(0)
    return torch.randn(200, 16), torch.randn(4, 16) * torch.tensor([3.0, 2.0, 1.0, 0.5])[:, None], torch.randn(4)


def _linear(weight, bias=None):
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    return head


def test_logit_adjustment_at_tau_0_gives_the_plain_logits():
    features, weight, bias = _head()
    head = _linear(weight, bias)
    plain = F.linear(features, weight, bias)
    assert torch.equal(adjusted_logits("logit_adjust", features, head, COUNTS, 0.0), head(features))
    torch.testing.assert_close(adjusted_logits("logit_adjust", features, head, COUNTS, 0.0), plain)
    assert not torch.equal(adjusted_logits("logit_adjust", features, head, COUNTS, 1.0), plain)


def test_tau_normalisation_scores_with_the_normalised_weights_alone():
    """Kang et al.'s tau-norm drops the bias, as the decoupling code and BALMS's tau_norm.py do: tau 0 gives the
    logits without the bias, and no bias, however large, changes the logits at any tau."""
    features, weight, bias = _head()
    torch.testing.assert_close(adjusted_logits("tau_norm", features, _linear(weight, bias), COUNTS, 0.0),
                               features @ weight.T)
    for tau in (0.0, 1.0, 2.0):
        with_bias = adjusted_logits("tau_norm", features, _linear(weight, bias * 100), COUNTS, tau)
        torch.testing.assert_close(with_bias, adjusted_logits("tau_norm", features, _linear(weight), COUNTS, tau))
    torch.testing.assert_close(adjusted_logits("tau_norm", features, _linear(weight, bias), COUNTS, 1.0),
                               features @ (weight / weight.norm(dim=1, keepdim=True)).T)


def _heads(kind: str) -> nn.Module:
    """A head of each kind the runs train, with rows of unequal norms (and, under LWS, unequal scales)."""
    torch.manual_seed(1)
    inner = nn.Linear(64, 10) if kind.endswith("linear") else NormedLinear(64, 10)
    with torch.no_grad():
        inner.weight.mul_(torch.linspace(0.2, 3.0, 10)[:, None])
    if not kind.startswith("lws"):
        return inner
    head = ScaledClassifier(inner)
    with torch.no_grad():
        head.scales.copy_(torch.linspace(0.3, 2.5, 10))
    return head


HEAD_KINDS = ("linear", "normed", "lws over linear", "lws over normed")


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_each_correction_where_it_means_as_the_model_gives_the_models_own_predictions(kind):
    """Logit adjustment at tau 0 gives the head's own logits, and tau-norm gives them where it means "as the model":
    at tau 0 on every head without a bias (and without the bias on a linear one), and at every tau on a normed head,
    whose rows are unit already. Over LWS, tau 1 divides the scales out again."""
    head = _heads(kind).eval()
    features = torch.randn(1000, 64, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        own = head(features)
        assert torch.equal(adjusted_logits("logit_adjust", features, head, COUNTS * 2 + COUNTS[:2], 0.0), own)
        bias = head.bias if kind == "linear" else head.linear.bias * head.scales if kind == "lws over linear" else None
        without_bias = own - (0 if bias is None else bias)
        at = {tau: adjusted_logits("tau_norm", features, head, COUNTS, tau) for tau in (0.0, 1.0)}
    torch.testing.assert_close(at[0.0], without_bias)
    assert torch.equal(at[0.0].argmax(1), without_bias.argmax(1))
    if kind == "normed":
        torch.testing.assert_close(at[1.0], own)
    if kind == "lws over normed":
        torch.testing.assert_close(at[1.0], head.linear(features))


def test_tau_norm_refuses_a_head_it_does_not_know_in_one_line():
    with pytest.raises(ConfigError, match="--tau-norm does not know the rows of a Sequential classifier"):
        adjusted_logits("tau_norm", torch.randn(2, 4), nn.Sequential(nn.Linear(4, 3)), COUNTS[:3], 1.0)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_the_corrections_read_what_the_models_head_receives(kind):
    """evaluate.py's pass with the head set aside gives the features the head sees in the model: a normed or scaled
    head's tau-0 logit adjustment of a whole model is the model's own output."""
    from accelerate import Accelerator

    from evaluate import classifier_inputs
    from models import build_model

    model, _ = build_model("resnet32", 10, False, 32, classifier="normed" if "normed" in kind else "linear")
    if kind.startswith("lws"):
        model = Stage2Model(model, "lws")
        with torch.no_grad():
            model.get_classifier().scales.copy_(torch.linspace(0.3, 2.5, 10))
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    loader = [(images[:12], torch.arange(12) % 10), (images[12:], torch.arange(12) % 10)]
    accelerator = Accelerator(cpu=True)
    model.eval()
    with torch.no_grad():
        own = model(images)
        features = classifier_inputs(model, loader, accelerator)
        adjusted = adjusted_logits("logit_adjust", features.logits, model.get_classifier(), list(range(1, 11)), 0.0)
    torch.testing.assert_close(adjusted, own)
    assert torch.equal(adjusted.argmax(1), own.argmax(1))


def test_logit_adjustment_subtracts_tau_times_the_log_prior():
    logits = torch.zeros(3, 4)
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    torch.testing.assert_close(logit_adjust(logits, COUNTS, 1.5), (-1.5 * prior.log()).expand(3, 4))
    # the rarest class gains the most
    assert logit_adjust(logits, COUNTS, 1.0)[0].argmax() == 3


def test_tau_normalisation_divides_each_row_by_its_norm_to_the_power_tau():
    _, weight, _ = _head()
    torch.testing.assert_close(tau_normalise(weight, 1.0).norm(dim=1), torch.ones(4))
    torch.testing.assert_close(tau_normalise(weight, 0.5).norm(dim=1), weight.norm(dim=1) ** 0.5)


def test_taus_are_a_comma_separated_list():
    assert parse_taus("0,0.5,1") == [0.0, 0.5, 1.0] and parse_taus("2") == [2.0]
    for bad in ("a", "1,1", "1,,2"):
        with pytest.raises(ValueError):
            parse_taus(bad)


@pytest.fixture(scope="module")
def runs(cifar_root, tmp_path_factory):
    """One-epoch cross-entropy runs, with a validation split ("val") and without ("test"): their run folders."""
    savedir = tmp_path_factory.mktemp("posthoc")
    folders = {}
    for select_on, val in (("val", "10"), ("test", "0")):
        check_ok(run_main(cifar_root, savedir, *DATA, "DATASET.val_per_class", val, "TRAIN.epochs", "1",
                          "DEFAULT.exp_name", f"CE-{select_on}"))
        folders[select_on] = savedir / "CIFAR10LT" / "resnet32" / f"CE-{select_on}"
    return savedir, folders


@pytest.mark.slow
def test_tau_is_chosen_on_validation_and_written_down(runs, cifar_root):
    _, folders = runs
    out = folders["val"] / "evaluation"
    proc = run_script("evaluate.py", cifar_root, str(folders["val"]), "--logit-adjust", "0,1,2", "--tau-norm", "0")
    check_ok(proc)
    adjusted = read(out / "logit_adjust" / "results-seed0.json")
    choice = adjusted["post_hoc"]
    assert choice["method"] == "logit_adjust" and choice["chosen_on"] == "val bcr"
    assert set(choice["val"]) == {"0.0", "1.0", "2.0"}
    assert choice["val"][str(choice["tau"])] == max(choice["val"].values())
    assert choice["tau"] == next(float(t) for t, v in choice["val"].items() if v == max(choice["val"].values()))
    # each tau's validation score is printed, not only written down
    printed = next(line for line in proc.stdout.splitlines() if "--logit-adjust, val bcr by tau:" in line)
    assert printed.split("by tau: ")[1] == ", ".join(f"{float(t):g} {100 * v:.2f} %" for t, v in choice["val"].items())
    assert adjusted["selected_by"] == "val bcr"  # the checkpoint's own selection, as its run wrote it
    scored = sha256(folders["val"] / "model-seed0-best.pt")  # report.py checks that it still stands there
    assert adjusted["checkpoint_sha256"] == read(out / "results-seed0.json")["checkpoint_sha256"] == scored
    assert not (out / "logit_adjust_tau1").exists()  # no test scores for the taus not chosen
    # tau 0, the only one given for tau-norm, is chosen; it scores without the bias, so not the plain logits
    assert read(out / "tau_norm" / "results-seed0.json")["post_hoc"]["tau"] == 0.0


@pytest.mark.slow
def test_without_validation_every_tau_gets_its_own_results(runs, cifar_root, tmp_path):
    _, folders = runs
    proc = run_script("evaluate.py", cifar_root, str(folders["test"]), "--out", str(tmp_path), "--logit-adjust", "0,1",
                      "TRAIN.mixed_precision", "no")  # overrides may follow the options
    check_ok(proc)
    found = {tau: read(tmp_path / f"logit_adjust_tau{tau}" / "results-seed0.json") for tau in ("0", "1")}
    assert [found[t]["post_hoc"]["tau"] for t in ("0", "1")] == [0.0, 1.0]
    assert all(result["post_hoc"]["chosen_on"] is None for result in found.values())
    assert found["0"]["test"]["bcr"] == read(tmp_path / "results-seed0.json")["test"]["bcr"]
    assert not (tmp_path / "logit_adjust").exists()


@pytest.mark.slow
def test_a_bad_tau_list_is_one_line(runs, cifar_root):
    _, folders = runs
    proc = run_script("evaluate.py", cifar_root, str(folders["val"]), "--tau-norm", "0.5,x")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is not a comma-separated list of numbers" in proc.stderr


@pytest.mark.slow
def test_report_shows_post_hoc_rows_beside_the_plain_one(runs, cifar_root, tmp_path):
    _, folders = runs
    check_ok(run_script("evaluate.py", cifar_root, str(folders["val"]), "--logit-adjust", "--tau-norm", "0,1"))
    report(folders["val"], out=tmp_path)  # the run and its evaluation/ folder
    text = (tmp_path / "report.md").read_text()
    table1 = text.split("## Table 1")[1].split("## Table 2")[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in table1.splitlines() if line.startswith("| Cross")]
    assert rows == ["CrossEntropyLoss", "CrossEntropyLoss + logit adjustment (tau on val)",
                    "CrossEntropyLoss + tau-norm (tau on val)"]
    table2 = text.split("## Table 2")[1].split("## Incomplete")[0]
    assert "| IF 10 | CrossEntropyLoss + logit adjustment (tau on val) | 1 |" in table2
