"""report.md (its tables and sections, with the figures' names) and the two CSV files: report.csv, a row per run
and seed, and report_cells.csv, a row per table cell."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from metrics import FEW_SHOT, MANY_SHOT
from storage import atomic_write

from .pooling import (DASH, column_key, column_label, fmt, imbalance_label, label_keys, loss_key, mean_std, natural,
                      pool, row_label, settings_id)
from .runs import Run, lookup

# Settings worth stating above a table when all its runs share them (after the epochs the runs trained, which
# TRAIN.iterations makes differ by data set and imbalance)
HEADLINE_SETTINGS = ("TRAIN.iterations", "DATASET.batch_size", "OPTIMIZER.name", "OPTIMIZER.lr", "SCHEDULER.sched_name",
                     "DATASET.val_per_class", "DEFAULT.data_seed", "selected_by")
# Config values copied into report.csv beside each run's identity
CSV_SETTINGS = ("DATASET.batch_size", "OPTIMIZER.name", "OPTIMIZER.lr", "SCHEDULER.sched_name", "DATASET.val_per_class",
                "DEFAULT.data_seed", "TRAIN.ckp_metric")
GROUP_METRICS = ("many_acc", "medium_acc", "few_acc", "head_acc", "mid_acc", "tail_acc", "worst_class_acc")


# ---------------------------------------------------------------- tables

def shared_settings(runs: list[Run]) -> str:
    """The epochs the runs of a table trained (a range where they differ), and the headline settings they all
    share, as one line."""
    common = []
    lengths = {run.epochs for run in runs}
    if lengths and None not in lengths:
        common.append(f"epochs {min(lengths)}" + (f"-{max(lengths)}" if len(lengths) > 1 else ""))
    for key in HEADLINE_SETTINGS:
        seen = {dict(run.settings).get(key) for run in runs}
        if len(seen) == 1 and None not in seen and not (key == "TRAIN.iterations" and seen == {"null"}):
            common.append(f"{key} {seen.pop().strip(chr(34))}")
    return ", ".join(common)


def best_rows(column_values: dict[str, float]) -> set[str]:
    """The rows holding the highest mean of a column (ties at the printed precision all count); none when the
    column holds fewer than two cells, where there is nothing to be best against."""
    if len(column_values) < 2:
        return set()
    top = max(round(100 * v, 2) for v in column_values.values())
    return {row for row, v in column_values.items() if round(100 * v, 2) == top}


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def bcr_table(runs: list[Run]) -> list[str]:
    """Table 1 for one model: a row per loss (and settings, when they differ), a column per data set x IF."""
    keys = label_keys(runs)
    columns = sorted({run.column for run in runs}, key=column_key)
    rows = defaultdict(lambda: defaultdict(list))   # row label -> column -> bcr of each seed
    order = {}
    for run in runs:
        label = row_label(run.loss, run.settings, keys)
        rows[label][run.column].append(run.score("bcr"))
        order[label] = (loss_key(run.loss), label)
    labels = sorted(rows, key=order.get)
    bold = {}
    for column in columns:
        means = {label: mean_std(rows[label][column]).mean for label in labels if rows[label].get(column)}
        bold[column] = best_rows({label: m for label, m in means.items() if m is not None})
    body = []
    for label in labels:
        texts = []
        for column in columns:
            text = fmt(rows[label][column]) if rows[label].get(column) else ""
            texts.append(f"**{text}**" if label in bold[column] else text)
        body.append([label, *texts])
    return markdown_table(["loss", *map(column_label, columns)], body)


def group_table(runs: list[Run], show_model: bool) -> list[str]:
    """Per data set: shot-group and worst-class accuracies of every cell, with bcr at the selected checkpoint and
    at the last epoch."""
    keys = label_keys(runs)
    header = (["model"] if show_model else []) + ["imbalance", "loss", "n", "bcr", "bcr (last epoch)",
                                                  "many", "medium", "few", "head", "mid", "tail", "worst class"]
    body = []
    for cell in sorted(pool(runs), key=lambda cell: (cell.key.model, column_key(cell.key.column),
                                                     loss_key(cell.key.loss))):
        row = [cell.key.model] if show_model else []
        row += [imbalance_label(cell.key.column), row_label(cell.key.loss, cell.key.settings, keys),
                str(len(cell.runs)), fmt(cell.scores("bcr"), False), fmt(cell.scores("bcr", "test_last_epoch"), False)]
        row += [fmt(cell.scores(metric), False) for metric in GROUP_METRICS]
        body.append(row)
    return markdown_table(header, body)


# ---------------------------------------------------------------- report.md

def repeated_seeds(runs: list[Run], root: Path) -> list[str]:
    """A line for each seed that two run folders of one cell both hold: the same run twice (a rerun under another
    exp_name, a copied folder) would otherwise count as two seeds."""
    lines = []
    for cell in pool(runs):
        folders = defaultdict(list)
        for run in cell.runs:
            folders[run.seed].append(str(run.folder.relative_to(root)))
        for seed, where in sorted(folders.items()):
            if len(where) > 1:
                lines.append(f"{column_label(cell.key.column)}, {cell.key.loss}, {cell.key.model}: seed {seed} "
                             f"appears in {len(where)} folders ({', '.join(where)}); each counts in n.")
    return lines


def intro_section(root: Path, runs: list[Run], complete: list[Run]) -> list[str]:
    """What the numbers are, which checkpoint selection they come from, and warnings about the runs found."""
    lines = [f"# Results of {root.resolve()}", "",
             f"{len(complete)} finished run(s) (run folder x seed), "
             f"{sum(run.status == 'incomplete' for run in runs)} incomplete. Scores are test-set percentages, "
             "mean ± sample standard deviation over seeds, n = number of seeds. Each run is scored at the checkpoint "
             "its `selected_by` names (the epoch with the best validation score, or the best test score when no "
             "validation split was held out, which flatters the numbers); \"last epoch\" is the final epoch's "
             "checkpoint instead (a meta-sampler run that learns on the val list keeps it, as its val scores are "
             "not held out). Seeds are pooled only when the rest of the config matches; rows labelled "
             "[KEY=value] differ in those settings.", ""]
    selections = defaultdict(int)
    for run in complete:
        selections[run.results.get("selected_by")] += 1
    if selections:
        lines += ["Checkpoint selection: " + ", ".join(f"{name} ({count} run(s))" for name, count in
                                                      selections.items()) + ".", ""]
    if left_out := [run for run in runs if run.status == "stale"]:
        lines += [left_out_line(left_out, root), ""]
    for warning in repeated_seeds(complete, root):
        lines += [f"**Warning**: {warning}", ""]
    return lines


def left_out_line(runs: list[Run], root: Path) -> str:
    """The one line that names evaluate.py's results the report leaves out, as their checkpoint changed since."""
    where = "; ".join(f"{run.folder.relative_to(root)} seed {run.seed}: {run.note}" for run in runs)
    return f"Left out: {len(runs)} evaluation result(s) of a checkpoint since replaced or removed ({where})."


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
                                 f"{run.last_epoch} of {'?' if run.epochs is None else run.epochs}", run.note])
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


def write_markdown(path: Path, root: Path, runs: list[Run], figures: list[str], notes: list[str]) -> None:
    complete = [run for run in runs if run.status == "complete"]
    lines = intro_section(root, runs, complete) + tables_section(complete)
    lines += incomplete_section([run for run in runs if run.status == "incomplete"], root)
    lines += reevaluation_section([run for run in runs if run.status == "re-evaluation"], root)
    lines += ["## Figures", ""]
    for name in figures:
        lines += [f"![{name}]({name})", ""]
    lines += [f"- {note}" for note in notes]
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))


# ---------------------------------------------------------------- csv

def write_runs_csv(path: Path, root: Path, runs: list[Run]) -> None:
    """One row per (run folder, seed): identity, status, headline settings and every scalar test metric."""
    metrics = sorted({key for run in runs for part in ("test", "test_last_epoch")
                      for key, value in (run.results.get(part) or {}).items() if not isinstance(value, (list, dict))})
    header = ["run", "seed", "status", "dataset", "imbalance_type", "imbalance_factor", "loss", "model",
              "settings_id", "selected_by", "best_epoch", "epochs", "last_epoch", "note",
              *CSV_SETTINGS,
              *[f"test_{m}" for m in metrics], *[f"test_last_epoch_{m}" for m in metrics]]
    rows = []
    for run in runs:
        row = [str(run.folder.relative_to(root)), run.seed, run.status, run.dataset, run.column.kind,
               run.column.factor, run.loss, run.model, settings_id(run.settings),
               run.results.get("selected_by", ""), run.results.get("best_epoch", run.results.get("epoch", "")),
               run.epochs, run.last_epoch if run.status == "incomplete" else "", run.note]
        row += [lookup(run.config, key) for key in CSV_SETTINGS]
        row += [run.score(m) for m in metrics] + [run.score(m, "test_last_epoch") for m in metrics]
        rows.append(row)
    save_csv(path, header, rows)


def write_cells_csv(path: Path, runs: list[Run]) -> None:
    """One row per table cell: the mean, std and n over seeds of each metric at the selected checkpoint."""
    metrics = ("bcr", "acc", "f1", "auroc", *GROUP_METRICS)
    header = ["dataset", "imbalance_type", "imbalance_factor", "loss", "model", "settings_id", "selected_by",
              "seeds", *[f"{m}_{s}" for m in (*metrics, "last_epoch_bcr") for s in ("mean", "std", "n")]]
    rows = []
    for cell in pool(runs):
        key, first = cell.key, cell.runs[0]
        row = [key.column.dataset, key.column.kind, key.column.factor, key.loss, key.model,
               settings_id(key.settings), first.results.get("selected_by", ""),
               " ".join(str(run.seed) for run in cell.runs)]
        for metric in metrics:
            row += mean_std(cell.scores(metric))
        row += mean_std(cell.scores("bcr", "test_last_epoch"))
        rows.append(row)
    save_csv(path, header, rows)


def save_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """A CSV file, an empty cell where a value is None, written as every output is (storage.atomic_write)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(["" if value is None else value for value in row] for row in rows)
    atomic_write(path, write)
