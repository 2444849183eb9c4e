"""The report's figures (matplotlib, no display needed): test bcr against imbalance factor for every cell, and for
cells that differ in their loss alone, per-class accuracy, confusion matrices and training curves side by side."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from checkpoint import output_paths  # noqa: E402
from errors import StorageError  # noqa: E402
from metrics import FULL_CONFUSION  # noqa: E402
from storage import atomic_write  # noqa: E402

from .pooling import (Cell, column_key, column_label, fmt, label_keys, loss_key, mean_std, natural,  # noqa: E402
                      number, pool, row_label, settings_id)
from .runs import Column, Run, Settings, read_json  # noqa: E402

SHORT_LOSS = {"CrossEntropyLoss": "CE", "BalancedSoftmax": "BS"}
MARKERS = "osD^vP*X"
MAX_BARS = 20       # classes drawn as bars while they stay readable, as lines beyond
MAX_NUMBERED = 10   # classes whose confusion matrix has its percentages written in


class Style(NamedTuple):
    """How one line of bcr_vs_imbalance.png is drawn."""
    colour: str
    marker: str
    linestyle: str


class Series(NamedTuple):
    """One line of bcr_vs_imbalance.png, in each panel (data set) where it has points."""
    label: str
    style: Style
    bcrs: dict[str, dict[float, list]]  # data set -> imbalance factor -> test bcr of each seed


class Comparison(NamedTuple):
    """Cells that differ in their loss alone, in LOSS_ORDER: one per-class and one confusion figure."""
    model: str
    column: Column
    settings: Settings
    cells: list[Cell]


def short(loss: str) -> str:
    return " ".join(SHORT_LOSS.get(word, word) for word in loss.split(" "))


def save(fig, path: Path) -> None:
    try:  # the format from the name: the temporary file's ends in .tmp
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix[1:]))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- bcr against imbalance factor

def bcr_series(runs: list[Run]) -> list[Series]:
    """A line per loss, model and settings, by loss: a loss keeps its colour in every panel, other settings change
    the marker, step profiles are dashed."""
    keys, several_models = label_keys(runs), len({run.model for run in runs}) > 1
    cells = pool(runs)
    variants = {cell.key: (f", {cell.key.model}" if several_models else "") + row_label(cell.key.loss, cell.key.settings, keys)[len(cell.key.loss):]
                for cell in cells}
    losses = sorted({run.loss for run in runs}, key=loss_key)
    markers = {variant: MARKERS[i % len(MARKERS)] for i, variant in enumerate(sorted(set(variants.values())))}
    series, order = {}, {}
    for cell in cells:
        key, variant = cell.key, variants[cell.key]
        step = key.column.kind == "step"
        label = short(key.loss) + variant + (" (step)" if step else "")
        style = Style(f"C{losses.index(key.loss) % 10}", markers[variant], "--" if step else "-")
        line = series.setdefault(label, Series(label, style, {}))
        line.bcrs.setdefault(key.column.dataset, {})[key.column.factor] = cell.scores("bcr")
        order[label] = (loss_key(key.loss), variant, step)
    return sorted(series.values(), key=lambda line: order[line.label])


def draw_series(ax, line: Series, points: dict[float, list], nudge: float) -> None:
    """One line of one panel, mean and std over seeds, moved sideways by the factor `nudge`."""
    stats = {factor: mean_std(bcrs) for factor, bcrs in points.items()}
    factors = sorted(factor for factor in stats if stats[factor].mean is not None)
    ax.errorbar([factor * nudge for factor in factors], [100 * stats[factor].mean for factor in factors],
                yerr=[100 * (stats[factor].std or 0) for factor in factors], capsize=3, color=line.style.colour,
                label=line.label, marker=line.style.marker, linestyle=line.style.linestyle)


def plot_bcr_vs_imbalance(path: Path, runs: list[Run]) -> None:
    """A panel per data set: bcr against imbalance factor, a line per (loss, model, settings); lines are nudged
    sideways a little so that error bars at one factor do not hide each other."""
    datasets = sorted({run.dataset for run in runs}, key=natural)
    series = bcr_series(runs)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets) + 0.5, 4.5), squeeze=False,
                             layout="constrained")
    for ax, dataset in zip(axes[0], datasets):
        for i, line in enumerate(series):
            if dataset in line.bcrs:
                draw_series(ax, line, line.bcrs[dataset], 1.03 ** (i - (len(series) - 1) / 2))
        ax.set_xscale("log")
        factors = sorted({factor for line in series for factor in line.bcrs.get(dataset, {})})
        ax.set_xticks(factors, [number(f) for f in factors])
        ax.set_xlim(min(factors) / 1.6, max(factors) * 1.6)
        ax.minorticks_off()
        ax.set(title=dataset, xlabel="imbalance factor (log scale)", ylabel="test bcr (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="loss")
    fig.suptitle("Test bcr against imbalance factor\n(mean over seeds, error bars: std)")
    save(fig, path)


# ---------------------------------------------------------------- per class, loss against loss

def per_class(run: Run) -> dict:
    return read_json(output_paths(run.folder, run.seed)["per_class"]) or {}


def class_names(run: Run, count: int) -> list[str]:
    counts = read_json(output_paths(run.folder, run.seed)["class_counts"]) or {}
    names = counts.get("classes") or []
    return names if len(names) == count else [str(c) for c in range(count)]


def by_count(counts: list[int]) -> list[int]:
    """The classes, most training images first."""
    return sorted(range(len(counts)), key=lambda c: (-counts[c], c))


def comparisons(runs: list[Run], factor) -> list[Comparison]:
    """The cells that differ only in their loss (same data set, imbalance, model and settings), two or more losses
    whose per-class results exist; at `factor`, or else at each data set's largest factor."""
    groups = {}
    for cell in pool([run for run in runs if "acc" in per_class(run)]):
        key = cell.key
        # the losses' own settings (LOSS.*, each read by some losses only) are part of what is compared
        settings = tuple(pair for pair in key.settings if not pair[0].startswith("LOSS."))
        groups.setdefault((key.model, key.column, settings), []).append(cell)
    found = [Comparison(model, column, settings, sorted(cells, key=lambda cell: loss_key(cell.key.loss)))
             for (model, column, settings), cells in groups.items() if len(cells) >= 2]
    chosen = []
    for dataset in sorted({comparison.column.dataset for comparison in found}, key=natural):
        mine = [comparison for comparison in found if comparison.column.dataset == dataset]
        want = factor if factor is not None else max(comparison.column.factor for comparison in mine)
        chosen += sorted((comparison for comparison in mine if comparison.column.factor == want),
                         key=lambda comparison: column_key(comparison.column))
    return chosen


def figure_stem(comparison: Comparison, unique: bool) -> str:
    """`<dataset>_IF<k>`, with the imbalance type for step and the model and settings when several compete."""
    column = comparison.column
    stem = f"{column.dataset}_" + (f"{column.kind}_" if column.kind == "step" else "") + f"IF{number(column.factor)}"
    if not unique:
        # the first characters of the settings_id in report.csv: short in a file name, and still finds the rows
        stem += f"_{comparison.model}_{settings_id(comparison.settings)[:6]}"
    return stem


def draw_class_accuracies(ax, cell: Cell, order: list[int], place: int, losses: int) -> None:
    """One loss's per-class accuracy, mean ± std over seeds cut to the 0-100% an accuracy can take: bars, the
    `place`-th of `losses` side by side, or a line with a band where the classes are too many for bars."""
    accs = np.array([per_class(run)["acc"] for run in cell.runs])[:, order] * 100
    mean = accs.mean(0)
    std = accs.std(0, ddof=1) if len(cell.runs) > 1 else None
    low, high = (None, None) if std is None else (np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100))
    label = f"{short(cell.key.loss)} (bcr {fmt(cell.scores('bcr'))})"
    x = np.arange(len(order))
    if len(order) <= MAX_BARS:
        width = 0.8 / losses
        ax.bar(x + (place - (losses - 1) / 2) * width, mean, width, label=label,
               yerr=None if std is None else [mean - low, high - mean],
               error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.3"})
    else:
        ax.plot(x, mean, marker=".", label=label)
        if std is not None:
            ax.fill_between(x, low, high, alpha=0.2)


def draw_counts(ax, counts: list[int]):
    """The training images of each class, on a log axis to the right of `ax`; returns that axis."""
    count_ax = ax.twinx()
    count_ax.step(np.arange(len(counts)), counts, where="mid", color="grey", linestyle=":", label="training images")
    count_ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2 x 10^1
    count_ax.yaxis.set_major_formatter(plain)
    count_ax.yaxis.set_minor_formatter(plain)
    count_ax.set_ylabel("training images per class (log scale)")
    return count_ax


def plot_per_class(path: Path, comparison: Comparison) -> None:
    """Per-class test accuracy of each loss, classes sorted by training count, the counts on a log axis."""
    first = comparison.cells[0].runs[0]
    counts = per_class(first)["num_per_cls"]
    order = by_count(counts)
    bars = len(counts) <= MAX_BARS
    fig, ax = plt.subplots(figsize=(8.0 if bars else 12.0, 4.8), layout="constrained")
    for place, cell in enumerate(comparison.cells):
        draw_class_accuracies(ax, cell, order, place, len(comparison.cells))
    ax.set(xlabel="class, by training images (largest first)" if bars else
           "class rank by training images (0 = largest)", ylabel="test accuracy (%)", ylim=(0, 125))
    ax.set_yticks(range(0, 101, 20))
    if bars:
        names = class_names(first, len(counts))
        ax.set_xticks(np.arange(len(counts)), [f"{names[c]}\n{counts[c]}" for c in order], fontsize=8)
    count_ax = draw_counts(ax, [counts[c] for c in order])
    handles = ax.get_legend_handles_labels()[0] + count_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center", ncol=len(handles))
    seeds = ", ".join(f"{short(cell.key.loss)} n={len(cell.runs)}" for cell in comparison.cells)
    ax.set_title(f"Per-class test accuracy, {column_label(comparison.column)}, {comparison.model}\n(mean over seeds, "
                 f"{seeds}; error bars: std, within 0-100%)")
    save(fig, path)


def plot_confusions(path: Path, comparison: Comparison) -> None:
    """Each loss's confusion matrix summed over seeds and normalised per true class, classes by training count."""
    first = comparison.cells[0].runs[0]
    counts = per_class(first)["num_per_cls"]
    order = by_count(counts)
    fig, axes = plt.subplots(1, len(comparison.cells), figsize=(5 * len(comparison.cells) + 1.5, 5.5), squeeze=False,
                             layout="constrained")
    for k, (ax, cell) in enumerate(zip(axes[0], comparison.cells)):
        matrix = sum(np.array(per_class(run)["confusion_matrix"], dtype=float) for run in cell.runs)
        matrix = matrix[np.ix_(order, order)]
        matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
        image = ax.imshow(matrix * 100, cmap="Blues", vmin=0, vmax=100)
        if len(counts) <= MAX_NUMBERED:
            for (i, j), value in np.ndenumerate(matrix * 100):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 50 else "black")
            names = class_names(first, len(counts))
            ax.set_xticks(range(len(counts)), [names[c] for c in order], rotation=90, fontsize=7)
            ax.set_yticks(range(len(counts)), [f"{names[c]} ({counts[c]})" for c in order], fontsize=7)
        seeds = len(cell.runs)
        ax.set(title=f"{cell.key.loss} (n={seeds} seed{'s' * (seeds > 1)})", xlabel="predicted class")
        if k == 0:
            ax.set_ylabel("true class (training images), largest first")
    fig.colorbar(image, ax=axes[0].tolist(), label="% of the true class's test images")
    fig.suptitle(f"Test confusion matrices, {column_label(comparison.column)}, {comparison.model}\n(summed over "
                 "seeds, normalised per true class)")
    save(fig, path)


# ---------------------------------------------------------------- training curves, loss against loss

def history(run: Run) -> list[dict]:
    """The run's per-epoch scores, as main.py writes them into its results (runs from before it have none)."""
    return run.results.get("history") or []


def plot_curves(path: Path, comparison: Comparison) -> None:
    """Each loss's selection-split bcr and training loss after every epoch, a line per seed."""
    fig, (bcr_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    rows = [row for cell in comparison.cells for run in cell.runs for row in history(run)]
    split = "val" if any("val_bcr" in row for row in rows) else "test"  # the split scored after every epoch
    for place, cell in enumerate(comparison.cells):
        for k, run in enumerate(cell.runs):
            rows = history(run)
            epochs = [row["epoch"] for row in rows]
            label = short(cell.key.loss) if k == 0 else None
            bcr_ax.plot(epochs, [100 * row.get(f"{split}_bcr", np.nan) for row in rows], color=f"C{place}",
                        label=label, linewidth=1)
            loss_ax.plot(epochs, [row["train_loss"] for row in rows], color=f"C{place}", label=label, linewidth=1)
    bcr_ax.set(xlabel="epoch", ylabel=f"{split} bcr (%)", title=f"{split} bcr after each epoch")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss (each its own loss function)")
    for ax in (bcr_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="loss")
    fig.suptitle(f"Training curves, {column_label(comparison.column)}, {comparison.model} (a line per seed)")
    save(fig, path)


# ---------------------------------------------------------------- all of them

def make_figures(out: Path, runs: list[Run], factor) -> tuple[list[str], list[str]]:
    """Write the figures; returns their file names and a note for each figure that could not be made."""
    written, notes = [], []

    def draw(name: str, plot, *args) -> None:
        """A figure that fails on odd results becomes a note in the report, not a crash of the whole report."""
        try:
            plot(out / name, *args)
            written.append(name)
        except StorageError:  # the disk, not the results: the command ends in its one line
            raise
        except Exception as error:  # noqa: BLE001
            plt.close("all")
            notes.append(f"{name} could not be drawn: {type(error).__name__}: {error}")

    if not runs:
        return written, ["No finished run: no figures."]
    draw("bcr_vs_imbalance.png", plot_bcr_vs_imbalance, runs)
    chosen = comparisons(runs, factor)
    for dataset in sorted({run.dataset for run in runs}, key=natural):
        if not any(comparison.column.dataset == dataset for comparison in chosen):
            where = f"at imbalance factor {number(factor)}" if factor is not None else "at any imbalance factor"
            notes.append(f"{dataset}: no per-class or confusion figure, as no two losses with per-class results "
                         f"and otherwise equal settings exist {where}.")
    for comparison in chosen:
        unique = sum(other.column.dataset == comparison.column.dataset for other in chosen) == 1
        stem = figure_stem(comparison, unique)
        draw(f"per_class_{stem}.png", plot_per_class, comparison)
        if all("confusion_matrix" in per_class(run) for cell in comparison.cells for run in cell.runs):
            draw(f"confusion_{stem}.png", plot_confusions, comparison)
        else:
            notes.append(f"{stem}: no confusion figure, as its per-class files hold no confusion matrix (over "
                         f"{FULL_CONFUSION} classes they keep the most confused pairs alone).")
        if all(history(run) for cell in comparison.cells for run in cell.runs):
            draw(f"curves_{stem}.png", plot_curves, comparison)
    return written, notes
