"""Seeds pooled into the cells that the tables and figures report, their mean ± std, and the labels, sort orders and
settings fingerprint that tables and figures share."""
from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from .runs import METHOD_KEYS, METHOD_NAMED, Column, Run, Settings, is_stage2

LOSS_ORDER = ("CrossEntropyLoss", "BalancedSoftmax", "LogitAdjusted", "Focal", "LDAM")
DASH = "–"  # an empty group, or no value


class CellKey(NamedTuple):
    """What tells one cell from another: everything about a run but its seed."""
    model: str
    column: Column
    loss: str
    settings: Settings


@dataclass(frozen=True)
class Cell:
    """The seeds of one key: the unit that every table cell and every point of a figure averages over."""
    key: CellKey
    runs: list[Run]

    def scores(self, metric: str, part: str = "test") -> list:
        return [run.score(metric, part) for run in self.runs]


class Stats(NamedTuple):
    """Over the seeds of a cell: mean, spread and how many seeds had a value."""
    mean: float | None
    std: float | None   # the sample standard deviation; None for one value
    n: int


def pool(runs: list[Run]) -> list[Cell]:
    """The runs' cells, in the order of each cell's first run."""
    pooled = defaultdict(list)
    for run in runs:
        pooled[CellKey(run.model, run.column, run.loss, run.settings)].append(run)
    return [Cell(key, members) for key, members in pooled.items()]


def mean_std(values: list) -> Stats:
    """Mean, sample standard deviation and count of the values that are not None (or NaN)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return Stats(None, None, 0)
    return Stats(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def fmt(values: list, with_n: bool = True) -> str:
    """Percentages as "41.23 ± 0.52 (n=3)"; one seed has no ± part, no value gives a dash."""
    stats = mean_std(values)
    if stats.mean is None:
        return DASH
    text = f"{100 * stats.mean:.2f}" + (f" ± {100 * stats.std:.2f}" if stats.std is not None else "")
    return text + (f" (n={stats.n})" if with_n else "")


def natural(text: str) -> list:
    """Sort key that puts CIFAR10LT before CIFAR100LT."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def column_key(column: Column) -> tuple:
    """Sort key: data sets in natural order, balanced first, then by factor."""
    return natural(column.dataset), column.kind != "balanced", column.factor, column.kind


def loss_key(loss: str) -> tuple:
    """Rows by their loss in LOSS_ORDER, each followed by its variants, post-hoc and stage-2 rows ("CrossEntropyLoss +
    mixup", "CrossEntropyLoss then cRT")."""
    base = loss.split(" ")[0]
    return (LOSS_ORDER.index(base) if base in LOSS_ORDER else len(LOSS_ORDER), loss)


def column_label(column: Column) -> str:
    return f"{column.dataset} {imbalance_label(column)}"


def imbalance_label(column: Column) -> str:
    """"IF 10" for the exponential profile, "IF 10 (step)", "balanced (IF 1)", "IF 256 (train list)" or "IF 100
    (train subset)"."""
    if column.kind == "balanced":
        return "balanced (IF 1)"
    if column.kind in ("train list", "train subset"):
        return f"IF {number(round(column.factor, 1))} ({column.kind})"
    return f"IF {number(column.factor)}" + (f" ({column.kind})" if column.kind != "exp" else "")


def number(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def varying(runs: list[Run]) -> list[str]:
    """The settings whose values differ between these runs: they label rows, so nothing pools silently."""
    values = defaultdict(set)
    all_keys = {key for run in runs for key, _ in run.settings}
    for run in runs:
        found = dict(run.settings)
        for key in all_keys:
            if key in found or key not in METHOD_KEYS:  # a method's key varies among the runs that read it
                values[key].add(found.get(key, "(absent)"))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def settings_label(settings: Settings, keys: list[str]) -> str:
    """" [KEY=value, ...]" of the `keys` that set these settings apart; "" when there are none."""
    found = dict(settings)
    # a method's key that this row's run leaves unread (runs.unread_method_keys) says nothing about it
    parts = [f"{key}={found.get(key, '(absent)').strip(chr(34))}" for key in keys
             if key in found or key not in METHOD_KEYS]
    return f" [{', '.join(parts)}]" if parts else ""


# Settings that the name of a stage-2 row already says ("CrossEntropyLoss then cRT")
STAGE2_NAMED = ("TRAIN.stage2_from", "TRAIN.stage2_classifier", "DATASET.sampler")


def label_keys(runs: list[Run]) -> dict:
    """The settings that label rows: for stage-1 rows (key False), those that differ between stage-1 runs; for a
    stage-2 row (key: its name), those that differ between the runs of that name. Stage-2 recipes bring schedules
    of their own (cRT's lr is not BS re-training's), which the row's name already stands for."""
    stage2 = [run for run in runs if is_stage2(run.settings)]
    # a stage-1 row's name already says its class weights, mixup and sampler (runs.method_name)
    keys = {False: [key for key in varying([run for run in runs if not is_stage2(run.settings)])
                    if key not in METHOD_NAMED]}
    for name in {run.loss for run in stage2}:
        keys[name] = [key for key in varying([run for run in stage2 if run.loss == name]) if key not in STAGE2_NAMED]
    return keys


def row_label(loss: str, settings: Settings, keys: dict) -> str:
    """The row's name and the settings of `keys` (label_keys) that set it apart from rows of the same kind."""
    return loss + settings_label(settings, keys[loss] if is_stage2(settings) else keys[False])


def settings_id(settings: Settings) -> str:
    """A short fingerprint of the settings, for grouping in pandas and telling figures apart."""
    return hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:8]
