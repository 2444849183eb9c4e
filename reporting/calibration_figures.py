"""The report's figures beyond the balanced test set, a panel or a line per run (one seed of a run folder, or one
evaluation): reliability diagrams of the test predictions, and top-1 accuracy over SADE's 11 shifted test sets, as
the model predicts and with each set's prior known (main.py and evaluate.py write both into the results)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from shifted import SHIFTS  # noqa: E402

from .figures import save  # noqa: E402
from .runs import Run  # noqa: E402

PANELS_A_ROW = 4


def run_label(run: Run, root: Path, width: int | None = None) -> str:
    """The run's method, and where it is: its folder under the report's root, and its seed; with `width`, on lines
    of about that many characters, the folder broken at its slashes."""
    where = os.path.relpath(run.folder, root) if run.folder != root else run.folder.name
    if not width:
        return f"{run.loss}: {where}, seed {run.seed}"
    lines = [run.loss, ""]
    for part in where.split(os.sep):
        if lines[-1] and len(lines[-1]) + len(part) + 1 > width:
            lines.append("")
        lines[-1] += (os.sep if lines[-1] else "") + part
    return "\n".join(lines) + f", seed {run.seed}"


def plot_reliability(path: Path, runs: list[Run], root: Path) -> None:
    """A reliability diagram per run: each bin's accuracy (bars) and mean confidence (dots) against the bin (on the
    diagonal: calibrated), the bins' image counts below it on a log axis, the ECE in the title."""
    columns = min(PANELS_A_ROW, len(runs))
    rows = math.ceil(len(runs) / columns)
    fig = plt.figure(figsize=(3.6 * columns, 4.4 * rows), layout="constrained")
    grid = fig.add_gridspec(2 * rows, columns, height_ratios=[3, 1] * rows)
    for k, run in enumerate(runs):
        bins = run.results["calibration"]["reliability"]
        edges = np.asarray(bins["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        accuracy = np.array([np.nan if a is None else 100 * a for a in bins["accuracy"]])
        confidence = np.array([np.nan if c is None else 100 * c for c in bins["confidence"]])
        top = fig.add_subplot(grid[2 * (k // columns), k % columns])
        bottom = fig.add_subplot(grid[2 * (k // columns) + 1, k % columns], sharex=top)
        top.bar(100 * centres, accuracy, width=100 * width, color="C0", edgecolor="white", label="accuracy")
        top.plot(100 * centres, confidence, "o", color="C3", markersize=3.5, label="mean confidence")
        top.plot([0, 100], [0, 100], color="black", linewidth=0.8, linestyle="--")
        top.set(xlim=(0, 100), ylim=(0, 100), ylabel="accuracy (%)")
        top.set_title(f"{run_label(run, root, 42)}\nECE {100 * run.score('ece'):.2f} %", fontsize=8)
        top.tick_params(labelbottom=False, labelsize=7)
        bottom.bar(100 * centres, bins["count"], width=100 * width, color="grey", edgecolor="white")
        bottom.set_yscale("log")
        bottom.yaxis.set_minor_formatter(NullFormatter())
        bottom.set(xlabel="confidence: top softmax probability (%)", ylabel="images")
        bottom.tick_params(labelsize=7)
        if k == 0:
            top.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Reliability of the test predictions ({len(bins['count'])} equal-width bins)")
    save(fig, path)  # atomically, closing the figure


def plot_shifted(path: Path, runs: list[Run], root: Path) -> None:
    """Top-1 accuracy on the 11 shifted test sets, a colour per run: solid as the model predicts, dashed with the
    set's prior known."""
    names = list(SHIFTS)
    fig, ax = plt.subplots(figsize=(12, 6 + 0.25 * math.ceil(len(runs) / 2)), layout="constrained")
    x = np.arange(len(names))
    handles = []
    for k, run in enumerate(runs):
        shifted = run.results["shifted"]
        colour, marker = f"C{k % 10}", "osD^vP*X"[k % 8]
        plain = [100 * shifted[name]["acc"] for name in names]
        ax.plot(x, plain, color=colour, marker=marker, linewidth=1.5, markersize=5)
        prior = [shifted[name].get("acc_prior") for name in names]
        if all(value is not None for value in prior):
            ax.plot(x, [100 * value for value in prior], color=colour, marker=marker, linewidth=1.2, linestyle="--",
                    markersize=4, markerfacecolor="none")
        handles.append(Line2D([], [], color=colour, marker=marker, label=run_label(run, root)))
    ax.set_xticks(x, names, rotation=30)
    ax.set(xlabel="test distribution (forward: head classes kept, backward: the profile reversed; SADE's draw)",
           ylabel="top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    styles = [Line2D([], [], color="black", label="as the model predicts"),
              Line2D([], [], color="black", linestyle="--", label="the set's prior known")]
    first = ax.legend(handles=styles, loc="lower left", fontsize=8)
    ax.add_artist(first)
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, title="run", title_fontsize=8)
    ax.set_title("Accuracy on the shifted test sets (top-1 accuracy, not bcr: a shifted set is not balanced)")
    save(fig, path)  # atomically, closing the figure


def calibration_figures(out: Path, runs: list[Run], root: Path) -> tuple[list[str], list[str]]:
    """reliability.png and shifted_accuracy.png of the runs whose results hold what they draw; the names written and
    a note for each figure without any run."""
    written, notes = [], []
    chosen = {"reliability.png": (plot_reliability, [run for run in runs if "calibration" in run.results]),
              "shifted_accuracy.png": (plot_shifted, [run for run in runs if "forward50" in
                                                      (run.results.get("shifted") or {})])}
    for name, (plot, members) in chosen.items():
        if not members:
            notes.append(f"{name}: no run's results hold what it draws (runs from before main.py reported it)")
            continue
        plot(out / name, members, root)
        written.append(name)
    return written, notes
