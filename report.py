"""Summarise the runs under results folders: `python report.py RESULTS_DIR [MORE_DIRS ...] [--out DIR]
[--imbalance-factor K]`.

Finds every run that main.py (or evaluate.py) wrote under the folders, at any depth, merges them (the folders of
several machines or SLURM array tasks, say), and writes into --out (default: the first folder):

- report.md: test bcr per loss x data set x imbalance factor (mean ± std over seeds, the best of each column in
  bold), a table of shot-group accuracies per data set, the incomplete or crashed runs, and the figures;
- report.csv: one row per (run folder, seed), every scalar test metric beside the settings that identify it;
- report_cells.csv: one row per table cell (mean, std, n of each metric over seeds);
- bcr_vs_imbalance.png, per_class_<dataset>_IF<k>.png, confusion_<dataset>_IF<k>.png.

Runs are pooled over seeds only when everything else in their config is the same (paths, logging and other
settings that do not change what is trained aside); runs that differ otherwise get rows of their own, labelled
with the settings that set them apart.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from checkpoint import RESUMABLE_CHANGES, output_paths  # noqa: E402
from metrics import FEW_SHOT, MANY_SHOT  # noqa: E402

# Config keys that name a run's cell in the tables, and those that never change what a run trains
IDENTITY_KEYS = ("DATASET.name", "DATASET.imbalance_type", "DATASET.imbalance_factor", "LOSS.name", "MODEL.name")
NOT_SETTINGS = ("DEFAULT.seed", "DEFAULT.savedir", "DEFAULT.exp_name", *RESUMABLE_CHANGES)
# Settings worth stating above a table when all its runs share them
HEADLINE_SETTINGS = ("TRAIN.epochs", "DATASET.batch_size", "OPTIMIZER.name", "OPTIMIZER.lr", "SCHEDULER.sched_name",
                     "DATASET.val_per_class", "DEFAULT.data_seed", "selected_by")
# Config values copied into report.csv beside each run's identity
CSV_SETTINGS = ("DATASET.batch_size", "OPTIMIZER.name", "OPTIMIZER.lr", "SCHEDULER.sched_name", "DATASET.val_per_class",
                "DEFAULT.data_seed", "TRAIN.ckp_metric")
GROUP_METRICS = ("many_acc", "medium_acc", "few_acc", "head_acc", "mid_acc", "tail_acc", "worst_class_acc")
LOSS_ORDER = ("CrossEntropyLoss", "BalancedSoftmax")
SHORT_LOSS = {"CrossEntropyLoss": "CE", "BalancedSoftmax": "BS"}
DASH = "–"  # an empty group, or no value


class ReportError(Exception):
    """Nothing to report on; main() prints it as one line."""


# ---------------------------------------------------------------- reading runs

@dataclass
class Run:
    """One seed of one run folder: its identity, its settings and, once finished, its test scores."""
    folder: Path
    seed: int
    config: dict
    status: str = "complete"          # complete | incomplete | re-evaluation
    results: dict = field(default_factory=dict)
    note: str = ""
    last_epoch: int | None = None     # epochs finished, for an incomplete run

    @property
    def dataset(self) -> str:
        return self.name("DATASET.name")

    @property
    def loss(self) -> str:
        return self.name("LOSS.name")

    @property
    def model(self) -> str:
        return self.name("MODEL.name")

    def name(self, key: str) -> str:
        """A config value as text; "?" where the config is missing (a run that left no readable config)."""
        value = lookup(self.config, key)
        return "?" if value is None else str(value)

    @property
    def epochs(self):
        return lookup(self.config, "TRAIN.epochs")

    @property
    def imbalance(self) -> tuple[str, float]:
        """(type, factor), with every balanced run as ("balanced", 1): a null type or a factor of 1."""
        if lookup(self.config, "DATASET") is None:
            return "?", 0
        kind, factor = lookup(self.config, "DATASET.imbalance_type"), lookup(self.config, "DATASET.imbalance_factor")
        if kind is None or factor in (None, 1):
            return "balanced", 1
        return str(kind), factor

    @property
    def column(self) -> tuple:
        """The data set and imbalance this run is a column of."""
        return (self.dataset, *self.imbalance)

    @property
    def settings(self) -> tuple:
        """Everything that defines what was trained and reported, apart from the cell's own identity and the
        seed: runs pool over seeds only when this is equal."""
        flat = {key: value for key, value in flatten(self.config).items()
                if key not in IDENTITY_KEYS and not any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)}
        flat["selected_by"] = self.results.get("selected_by", "evaluate.py" if self.status == "re-evaluation" else None)
        return tuple(sorted((key, json.dumps(value, sort_keys=True)) for key, value in flat.items()))

    def score(self, metric: str, part: str = "test"):
        return (self.results.get(part) or {}).get(metric)


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


def flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_json(path: Path):
    """The parsed file, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_checkpoint(path: Path) -> dict | None:
    """The last-epoch checkpoint's epoch and config, or None; torch is imported only when one is needed."""
    if not path.exists():
        return None
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a truncated file is part of what a crash leaves behind
        return None
    return state if isinstance(state, dict) else None


SEED_FILE = re.compile(r"(?:results-seed|model_seed|class_counts-seed|results_seed|configs-seed)(\d+)(?:_best)?"
                       r"\.(?:json|pt|yaml)")


def run_folders(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) holding a run's config, checkpoint or results."""
    found = []
    for folder, _, files in os.walk(root):
        if "configs.yaml" in files or any(SEED_FILE.fullmatch(name) for name in files):
            found.append(Path(folder))
    return sorted(found)


def folder_runs(folder: Path) -> list[Run]:
    """One Run per seed that left a file in `folder`; a config with no other seed file is a run that died early.
    Each seed's config is its own configs-seed{s}.yaml; a configs.yaml shared by all seeds is from older runs."""
    seeds = sorted({int(m.group(1)) for name in os.listdir(folder) if (m := SEED_FILE.fullmatch(name))})
    folder_config = read_yaml(folder / "configs.yaml")
    if not seeds:  # only an older run's configs.yaml: main.py died before the first seed file
        seeds = [lookup(folder_config or {}, "DEFAULT.seed") or 0]
    return [seed_run(folder, seed, read_yaml(output_paths(folder, seed)["config"]) or folder_config)
            for seed in seeds]


def read_yaml(path: Path) -> dict | None:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def seed_run(folder: Path, seed: int, folder_config: dict | None) -> Run:
    paths = output_paths(folder, seed)
    results = read_json(paths["results"])
    if isinstance(results, dict) and isinstance(results.get("test"), dict):
        # evaluate.py writes the same file names, with the checkpoint it evaluated instead of a selection
        status = "re-evaluation" if "checkpoint" in results else "complete"
        return Run(folder, seed, results.get("config") or folder_config or {}, status, results)
    state = read_checkpoint(paths["last"]) or {}
    config = state.get("config") or folder_config or {}
    run = Run(folder, seed, config, "incomplete", last_epoch=state.get("epoch", 0))
    if paths["results"].exists():
        run.note = f"{paths['results'].name} is unreadable"
    elif not state:
        run.note = "no checkpoint: stopped during its first epoch" if not paths["last"].exists() else \
            f"{paths['last'].name} is unreadable"
    elif run.last_epoch == run.epochs:
        run.note = "trained every epoch, but stopped before writing its results (in the final test?)"
    else:
        run.note = "stopped mid-training: rerun the same command to resume it"
    return run


def find_runs(roots: list[Path]) -> list[Run]:
    """The runs under every folder of `roots`, each run folder once (also where one root holds another)."""
    folders = sorted({folder.resolve() for root in roots for folder in run_folders(root)})
    return [run for folder in folders for run in folder_runs(folder)]


def common_root(roots: list[Path]) -> Path:
    """The folder that the report names run folders relative to: the one root, or the roots' common parent."""
    return Path(os.path.commonpath([root.resolve() for root in roots]))


# ---------------------------------------------------------------- aggregation

def mean_std(values: list) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None for one value) and count of the values that are not None."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None, 0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def fmt(values: list, with_n: bool = True) -> str:
    """Percentages as "41.23 ± 0.52 (n=3)"; one seed has no ± part, no value gives a dash."""
    mean, std, n = mean_std(values)
    if mean is None:
        return DASH
    text = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
    return text + (f" (n={n})" if with_n else "")


def natural(text: str) -> list:
    """Sort key that puts CIFAR10LT before CIFAR100LT."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def column_key(column: tuple) -> tuple:
    dataset, kind, factor = column
    return natural(dataset), kind != "balanced", factor, kind


def loss_key(loss: str) -> tuple:
    return (LOSS_ORDER.index(loss) if loss in LOSS_ORDER else len(LOSS_ORDER), loss)


def column_label(column: tuple) -> str:
    return f"{column[0]} {imbalance_label(column)}"


def imbalance_label(column: tuple) -> str:
    """"IF 10" for the exponential profile, "IF 10 (step)", or "balanced (IF 1)"."""
    _, kind, factor = column
    if kind == "balanced":
        return "balanced (IF 1)"
    return f"IF {number(factor)}" + (f" ({kind})" if kind != "exp" else "")


def number(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def varying(runs: list[Run]) -> list[str]:
    """The settings whose values differ between these runs: they label rows, so nothing pools silently."""
    values = defaultdict(set)
    all_keys = {key for run in runs for key, _ in run.settings}
    for run in runs:
        found = dict(run.settings)
        for key in all_keys:
            values[key].add(found.get(key, "(absent)"))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def settings_label(run: Run, keys: list[str]) -> str:
    found = dict(run.settings)
    parts = [f"{key}={found.get(key, '(absent)').strip(chr(34))}" for key in keys]
    return f" [{', '.join(parts)}]" if parts else ""


def settings_id(run: Run) -> str:
    """A short fingerprint of the settings, for grouping in pandas."""
    return hashlib.sha1(json.dumps(run.settings).encode()).hexdigest()[:8]


def shared_settings(runs: list[Run]) -> str:
    """The headline settings that every run of a table shares, as one line."""
    common = []
    for key in HEADLINE_SETTINGS:
        seen = {dict(run.settings).get(key) for run in runs}
        if len(seen) == 1 and None not in seen:
            common.append(f"{key} {seen.pop().strip(chr(34))}")
    return ", ".join(common)


def cells(runs: list[Run]) -> dict[tuple, list[Run]]:
    """Seeds pooled by (model, column, loss, settings): the unit every table and figure averages over."""
    pooled = defaultdict(list)
    for run in runs:
        pooled[(run.model, run.column, run.loss, run.settings)].append(run)
    return dict(pooled)


def repeated_seeds(runs: list[Run], root: Path) -> list[str]:
    """A line for each seed that two run folders of one cell both hold: the same run twice (a rerun under another
    exp_name, a copied folder) would otherwise count as two seeds."""
    lines = []
    for (model, column, loss, _), members in cells(runs).items():
        folders = defaultdict(list)
        for run in members:
            folders[run.seed].append(str(run.folder.relative_to(root)))
        for seed, where in sorted(folders.items()):
            if len(where) > 1:
                lines.append(f"{column_label(column)}, {loss}, {model}: seed {seed} appears in {len(where)} folders "
                             f"({', '.join(where)}); each counts in n.")
    return lines


def best_rows(column_values: dict[str, float]) -> set[str]:
    """The rows holding the highest mean of a column (ties at the printed precision all count); none when the
    column holds fewer than two cells, where there is nothing to be best against."""
    if len(column_values) < 2:
        return set()
    top = max(round(100 * v, 2) for v in column_values.values())
    return {row for row, v in column_values.items() if round(100 * v, 2) == top}


# ---------------------------------------------------------------- markdown

def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells_: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells_) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def bcr_table(runs: list[Run]) -> list[str]:
    """Table 1 for one model: a row per loss (and settings, when they differ), a column per data set x IF."""
    keys = varying(runs)
    columns = sorted({run.column for run in runs}, key=column_key)
    rows = defaultdict(lambda: defaultdict(list))   # row label -> column -> bcr of each seed
    order = {}
    for run in runs:
        label = run.loss + settings_label(run, keys)
        rows[label][run.column].append(run.score("bcr"))
        order[label] = (loss_key(run.loss), label)
    labels = sorted(rows, key=order.get)
    bold = {}
    for column in columns:
        means = {label: mean_std(rows[label][column])[0] for label in labels if rows[label].get(column)}
        bold[column] = best_rows({label: m for label, m in means.items() if m is not None})
    body = []
    for label in labels:
        cells_ = []
        for column in columns:
            text = fmt(rows[label][column]) if rows[label].get(column) else ""
            cells_.append(f"**{text}**" if label in bold[column] else text)
        body.append([label, *cells_])
    return markdown_table(["loss", *map(column_label, columns)], body)


def group_table(runs: list[Run], show_model: bool) -> list[str]:
    """Per data set: shot-group and worst-class accuracies of every cell, with bcr at the selected checkpoint and
    at the last epoch."""
    keys = varying(runs)
    header = (["model"] if show_model else []) + ["imbalance", "loss", "n", "bcr", "bcr (last epoch)",
                                                  "many", "medium", "few", "head", "mid", "tail", "worst class"]
    body = []
    for (model, column, loss, _), members in sorted(
            cells(runs).items(), key=lambda item: (item[0][0], column_key(item[0][1]), loss_key(item[0][2]))):
        row = [model] if show_model else []
        row += [imbalance_label(column),
                loss + settings_label(members[0], keys), str(len(members)),
                fmt([r.score("bcr") for r in members], False),
                fmt([r.score("bcr", "test_last_epoch") for r in members], False)]
        row += [fmt([r.score(metric) for r in members], False) for metric in GROUP_METRICS]
        body.append(row)
    return markdown_table(header, body)


def incomplete_section(runs: list[Run], root: Path) -> list[str]:
    lines = ["## Incomplete or crashed runs", ""]
    if not runs:
        return lines + ["None: every run found finished and wrote its results.", ""]
    lines += ["Not in the tables or figures above. Rerunning the same `main.py` command resumes a run from its "
              "last checkpoint.", ""]
    body = []
    for run in runs:
        where = [str(run.folder.relative_to(root)), str(run.seed)]
        if run.config:
            body.append(where + [run.dataset, imbalance_label(run.column), run.loss, run.model,
                                 f"{run.last_epoch} of {run.epochs}", run.note])
        else:
            body.append(where + ["?"] * 5 + [f"{run.note} (no readable config)"])
    return lines + markdown_table(["run", "seed", "data set", "imbalance", "loss", "model", "epochs finished",
                                   "note"], body) + [""]


def reevaluation_section(runs: list[Run], root: Path) -> list[str]:
    """Results that evaluate.py wrote: listed apart, so they never double a training run's seed in the tables."""
    if not runs:
        return []
    body = [[str(run.folder.relative_to(root)), str(run.seed), column_label(run.column), run.loss, run.model,
             str(run.results.get("epoch")), Path(str(run.results.get("checkpoint"))).name,
             fmt([run.score("bcr")], False)] for run in runs]
    return ["## Re-evaluations (evaluate.py)", "", "Saved checkpoints evaluated again on the test set; not "
            "pooled with the training runs above.", ""] + markdown_table(
        ["folder", "seed", "imbalance", "loss", "model", "epoch", "checkpoint", "test bcr"], body) + [""]


def intro_section(root: Path, runs: list[Run], complete: list[Run]) -> list[str]:
    """What the numbers are, which checkpoint selection they come from, and warnings about the runs found."""
    lines = [f"# Results of {root.resolve()}", "",
             f"{len(complete)} finished run(s) (run folder x seed), "
             f"{sum(run.status == 'incomplete' for run in runs)} incomplete. Scores are test-set percentages, "
             "mean ± sample standard deviation over seeds, n = number of seeds. Each run is scored at the checkpoint "
             "its `selected_by` names (the epoch with the best validation score, or the best test score when no "
             "validation split was held out, which flatters the numbers); \"last epoch\" is the final epoch's "
             "checkpoint instead. Seeds are pooled only when the rest of the config matches; rows labelled "
             "[KEY=value] differ in those settings.", ""]
    selections = defaultdict(int)
    for run in complete:
        selections[run.results.get("selected_by")] += 1
    if selections:
        lines += ["Checkpoint selection: " + ", ".join(f"{name} ({count} run(s))" for name, count in
                                                      selections.items()) + ".", ""]
    for warning in repeated_seeds(complete, root):
        lines += [f"**Warning**: {warning}", ""]
    return lines


def tables_section(complete: list[Run]) -> list[str]:
    """Table 1 per model, then Table 2 per data set."""
    if not complete:
        return ["No run has finished yet: no tables.", ""]
    models = sorted({run.model for run in complete})
    lines = ["## Table 1: balanced classification rate (bcr, %)", ""]
    for model in models:
        members = [run for run in complete if run.model == model]
        lines += [f"### {model}", "", f"Settings shared by every cell: {shared_settings(members)}.", "",
                  "Bold: the best cell of its column (of two or more).", ""] + bcr_table(members) + [""]
    lines += ["## Table 2: accuracy per group of classes (%)", "",
              f"many/medium/few: classes with > {MANY_SHOT}, {FEW_SHOT}-{MANY_SHOT} and < {FEW_SHOT} training "
              "images; head/mid/tail: thirds of the classes by training count; worst class: the lowest per-class "
              f"accuracy. {DASH}: the group has no class.", ""]
    for dataset in sorted({run.dataset for run in complete}, key=natural):
        members = [run for run in complete if run.dataset == dataset]
        lines += [f"### {dataset}", ""] + group_table(members, len(models) > 1) + [""]
    return lines


def write_markdown(path: Path, root: Path, runs: list[Run], figures: list[str], notes: list[str]) -> None:
    complete = [run for run in runs if run.status == "complete"]
    lines = intro_section(root, runs, complete) + tables_section(complete)
    lines += incomplete_section([run for run in runs if run.status == "incomplete"], root)
    lines += reevaluation_section([run for run in runs if run.status == "re-evaluation"], root)
    lines += ["## Figures", ""]
    for name in figures:
        lines += [f"![{name}]({name})", ""]
    lines += [f"- {note}" for note in notes]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- csv

def write_runs_csv(path: Path, root: Path, runs: list[Run]) -> None:
    """One row per (run folder, seed): identity, status, headline settings and every scalar test metric."""
    metrics = sorted({key for run in runs for part in ("test", "test_last_epoch")
                      for key, value in (run.results.get(part) or {}).items() if not isinstance(value, (list, dict))})
    header = ["run", "seed", "status", "dataset", "imbalance_type", "imbalance_factor", "loss", "model",
              "settings_id", "selected_by", "best_epoch", "epochs", "last_epoch", "note",
              *CSV_SETTINGS,
              *[f"test_{m}" for m in metrics], *[f"test_last_epoch_{m}" for m in metrics]]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for run in runs:
            kind, factor = run.imbalance
            row = [str(run.folder.relative_to(root)), run.seed, run.status, run.dataset, kind, factor, run.loss,
                   run.model, settings_id(run), run.results.get("selected_by", ""),
                   run.results.get("best_epoch", run.results.get("epoch", "")), run.epochs,
                   run.last_epoch if run.status == "incomplete" else "", run.note]
            row += [lookup(run.config, key) for key in CSV_SETTINGS]
            row += [run.score(m) for m in metrics] + [run.score(m, "test_last_epoch") for m in metrics]
            writer.writerow(["" if value is None else value for value in row])


def write_cells_csv(path: Path, runs: list[Run]) -> None:
    """One row per table cell: the mean, std and n over seeds of each metric at the selected checkpoint."""
    metrics = ("bcr", "acc", "f1", "auroc", *GROUP_METRICS)
    header = ["dataset", "imbalance_type", "imbalance_factor", "loss", "model", "settings_id", "selected_by",
              "seeds", *[f"{m}_{s}" for m in (*metrics, "last_epoch_bcr") for s in ("mean", "std", "n")]]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for (model, (dataset, kind, factor), loss, _), members in cells(runs).items():
            row = [dataset, kind, factor, loss, model, settings_id(members[0]),
                   members[0].results.get("selected_by", ""), " ".join(str(r.seed) for r in members)]
            for metric in metrics:
                row += mean_std([r.score(metric) for r in members])
            row += mean_std([r.score("bcr", "test_last_epoch") for r in members])
            writer.writerow(["" if value is None else value for value in row])


# ---------------------------------------------------------------- figures

def short(loss: str) -> str:
    return SHORT_LOSS.get(loss, loss)


def plot_bcr_vs_imbalance(path: Path, runs: list[Run]) -> None:
    """A panel per data set: bcr against imbalance factor, a line per (loss, model, settings). A loss keeps its
    colour in every panel, other settings change the marker, step profiles are dashed; lines are nudged sideways
    a little so that error bars at one factor do not hide each other."""
    datasets = sorted({run.dataset for run in runs}, key=natural)
    keys, several_models = varying(runs), len({run.model for run in runs}) > 1
    lines = defaultdict(lambda: defaultdict(dict))  # data set -> line label -> imbalance factor -> bcr per seed
    style = {}
    losses = sorted({run.loss for run in runs}, key=loss_key)
    for (model, (dataset, kind, factor), loss, _), members in cells(runs).items():
        variant = (f", {model}" if several_models else "") + settings_label(members[0], keys)
        label = short(loss) + variant + (" (step)" if kind == "step" else "")
        lines[dataset][label][factor] = [r.score("bcr") for r in members]
        style[label] = (loss_key(loss), variant, kind == "step", f"C{losses.index(loss) % 10}")
    labels = sorted(style, key=lambda label: style[label][:3])
    variants = sorted({value[1] for value in style.values()})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets) + 0.5, 4.5), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        for i, label in enumerate(labels):
            if label not in lines[dataset]:
                continue
            _, variant, step, colour = style[label]
            stats = {f: mean_std(bcrs) for f, bcrs in lines[dataset][label].items()}
            factors = sorted(f for f in stats if stats[f][0] is not None)
            stats = [stats[f] for f in factors]
            nudge = 1.03 ** (i - (len(labels) - 1) / 2)
            ax.errorbar([f * nudge for f in factors], [100 * m for m, _, _ in stats],
                        yerr=[100 * (s or 0) for _, s, _ in stats], capsize=3, color=colour, label=label,
                        marker="osD^vP*X"[variants.index(variant) % 8], linestyle="--" if step else "-")
        ax.set_xscale("log")
        factors = sorted({f for line in lines[dataset].values() for f in line})
        ax.set_xticks(factors, [number(f) for f in factors])
        ax.set_xlim(min(factors) / 1.6, max(factors) * 1.6)
        ax.minorticks_off()
        ax.set(title=dataset, xlabel="imbalance factor (log scale)", ylabel="test bcr (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="loss")
    fig.suptitle("Test bcr against imbalance factor\n(mean over seeds, error bars: std)")
    save(fig, path)


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparisons(runs: list[Run], factor) -> list[tuple[tuple, dict[str, list[Run]]]]:
    """Groups of cells that differ only in their loss (same data set, imbalance, model and settings), with two
    or more losses whose per-class results exist; at `factor`, or else at each data set's largest factor."""
    groups = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if "acc" in per_class(run):
            groups[(run.dataset, run.column, run.model, run.settings)][run.loss].append(run)
    groups = {key: losses for key, losses in groups.items() if len(losses) >= 2}
    chosen = []
    for dataset in sorted({key[0] for key in groups}, key=natural):
        mine = {key: losses for key, losses in groups.items() if key[0] == dataset}
        want = factor if factor is not None else max(key[1][2] for key in mine)
        chosen += [(key, dict(sorted(losses.items(), key=lambda item: loss_key(item[0]))))
                   for key, losses in sorted(mine.items(), key=lambda item: column_key(item[0][1]))
                   if key[1][2] == want]
    return chosen


def figure_stem(key: tuple, unique: bool) -> str:
    """`<dataset>_IF<k>`, with the imbalance type for step and the model and settings when several compete."""
    dataset, (_, kind, factor), model, settings = key
    stem = f"{dataset}_" + (f"{kind}_" if kind == "step" else "") + f"IF{number(factor)}"
    if not unique:
        stem += f"_{model}_{hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:6]}"
    return stem


def per_class(run: Run) -> dict:
    return read_json(run.folder / f"results-seed{run.seed}-per_class.json") or {}


def class_names(run: Run, count: int) -> list[str]:
    counts = read_json(run.folder / f"class_counts-seed{run.seed}.json") or {}
    names = counts.get("classes") or []
    return names if len(names) == count else [str(c) for c in range(count)]


def plot_per_class(path: Path, key: tuple, losses: dict[str, list[Run]]) -> None:
    """Per-class test accuracy of each loss, classes sorted by training count, the counts on a log axis."""
    first = next(iter(losses.values()))[0]
    counts = per_class(first)["num_per_cls"]
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    names = class_names(first, len(counts))
    fig, ax = plt.subplots(figsize=(8.0 if len(counts) <= 20 else 12.0, 4.8), layout="constrained")
    x = np.arange(len(counts))
    width = 0.8 / len(losses)
    for i, (loss, members) in enumerate(losses.items()):
        accs = np.array([per_class(r)["acc"] for r in members])[:, order] * 100
        mean = accs.mean(0)
        std = accs.std(0, ddof=1) if len(members) > 1 else None
        # mean ± std, cut to the 0-100% an accuracy can take
        low, high = (None, None) if std is None else (np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100))
        label = f"{short(loss)} (bcr {fmt([r.score('bcr') for r in members])})"
        if len(counts) <= 20:  # bars while they stay readable, lines beyond
            ax.bar(x + (i - (len(losses) - 1) / 2) * width, mean, width, label=label,
                   yerr=None if std is None else [mean - low, high - mean],
                   error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.3"})
        else:
            ax.plot(x, mean, marker=".", label=label)
            if std is not None:
                ax.fill_between(x, low, high, alpha=0.2)
    ax.set(xlabel="class, by training images (largest first)" if len(counts) <= 20 else
           "class rank by training images (0 = largest)", ylabel="test accuracy (%)", ylim=(0, 125))
    ax.set_yticks(range(0, 101, 20))
    if len(counts) <= 20:
        ax.set_xticks(x, [f"{names[c]}\n{counts[c]}" for c in order], fontsize=8)
    count_ax = ax.twinx()
    count_ax.step(x, [counts[c] for c in order], where="mid", color="grey", linestyle=":", label="training images")
    count_ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2 x 10^1
    count_ax.yaxis.set_major_formatter(plain)
    count_ax.yaxis.set_minor_formatter(plain)
    count_ax.set_ylabel("training images per class (log scale)")
    handles = ax.get_legend_handles_labels()[0] + count_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center", ncol=len(handles))
    dataset, column, model, _ = key
    seeds = ", ".join(f"{short(loss)} n={len(members)}" for loss, members in losses.items())
    ax.set_title(f"Per-class test accuracy, {column_label(column)}, {model}\n(mean over seeds, {seeds}; "
                 "error bars: std, within 0-100%)")
    save(fig, path)


def plot_confusions(path: Path, key: tuple, losses: dict[str, list[Run]]) -> None:
    """Each loss's confusion matrix summed over seeds and normalised per true class, classes by training count."""
    first = next(iter(losses.values()))[0]
    counts = per_class(first)["num_per_cls"]
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses) + 1.5, 5.5), squeeze=False,
                             layout="constrained")
    for k, (ax, (loss, members)) in enumerate(zip(axes[0], losses.items())):
        matrix = sum(np.array(per_class(r)["confusion_matrix"], dtype=float) for r in members)[np.ix_(order, order)]
        matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
        image = ax.imshow(matrix * 100, cmap="Blues", vmin=0, vmax=100)
        if len(counts) <= 10:
            for (i, j), value in np.ndenumerate(matrix * 100):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 50 else "black")
            names = class_names(first, len(counts))
            ax.set_xticks(range(len(counts)), [names[c] for c in order], rotation=90, fontsize=7)
            ax.set_yticks(range(len(counts)), [f"{names[c]} ({counts[c]})" for c in order], fontsize=7)
        ax.set(title=f"{loss} (n={len(members)} seed{'s' * (len(members) > 1)})", xlabel="predicted class")
        if k == 0:
            ax.set_ylabel("true class (training images), largest first")
    fig.colorbar(image, ax=axes[0].tolist(), label="% of the true class's test images")
    dataset, column, model, _ = key
    fig.suptitle(f"Test confusion matrices, {column_label(column)}, {model}\n(summed over seeds, normalised per "
                 "true class)")
    save(fig, path)


def make_figures(out: Path, runs: list[Run], factor) -> tuple[list[str], list[str]]:
    """Write the figures; returns their file names and a note for each figure that could not be made."""
    written, notes = [], []

    def draw(name: str, plot, *args) -> None:
        """A figure that fails on odd results becomes a note in the report, not a crash of the whole report."""
        try:
            plot(out / name, *args)
            written.append(name)
        except Exception as error:  # noqa: BLE001
            plt.close("all")
            notes.append(f"{name} could not be drawn: {type(error).__name__}: {error}")

    if not runs:
        return written, ["No finished run: no figures."]
    draw("bcr_vs_imbalance.png", plot_bcr_vs_imbalance, runs)
    chosen = comparisons(runs, factor)
    for dataset in sorted({run.dataset for run in runs}, key=natural):
        if not any(key[0] == dataset for key, _ in chosen):
            where = f"at imbalance factor {number(factor)}" if factor is not None else "at any imbalance factor"
            notes.append(f"{dataset}: no per-class or confusion figure, as no two losses with per-class results "
                         f"and otherwise equal settings exist {where}.")
    for key, losses in chosen:
        stem = figure_stem(key, sum(k[0] == key[0] for k, _ in chosen) == 1)
        draw(f"per_class_{stem}.png", plot_per_class, key, losses)
        draw(f"confusion_{stem}.png", plot_confusions, key, losses)
    return written, notes


# ---------------------------------------------------------------- entry point

def report(roots: Path | list[Path], factor=None, out: Path | None = None) -> list[Path]:
    """Write every output of the report for the runs under `roots`, merged, into `out` (default: the first of
    `roots`); returns the files written."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    for root in roots:
        if not root.is_dir():
            raise ReportError(f"{root} is not a folder: pass the DEFAULT.savedir of your runs, e.g. ./results")
    runs = find_runs(roots)
    if not runs:
        raise ReportError(f"no runs under {' '.join(map(str, roots))}: no configs-seed*.yaml, results-seed*.json or "
                          "model_seed*.pt")
    out = out or roots[0]
    out.mkdir(parents=True, exist_ok=True)
    root = common_root(roots)
    complete = [run for run in runs if run.status == "complete"]
    figures, notes = make_figures(out, complete, factor)
    write_markdown(out / "report.md", root, runs, figures, notes)
    write_runs_csv(out / "report.csv", root, runs)
    write_cells_csv(out / "report_cells.csv", complete)
    return [out / name for name in ("report.md", "report.csv", "report_cells.csv", *figures)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dirs", type=Path, nargs="+",
                        help="the folders main.py saved runs under (DEFAULT.savedir); several are merged")
    parser.add_argument("--out", type=Path, default=None, help="where the report goes (default: the first folder)")
    parser.add_argument("--imbalance-factor", type=float, default=None,
                        help="imbalance factor of the per-class and confusion figures (default: the largest one "
                             "where two losses were run)")
    args = parser.parse_args(argv)
    factor = args.imbalance_factor
    if factor is not None and factor.is_integer():
        factor = int(factor)
    try:
        written = report(args.results_dirs, factor, args.out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} files to {args.out or args.results_dirs[0]}:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
