"""Summarise the runs under results folders: `python report.py RESULTS_DIR [MORE_DIRS ...] [--out DIR]
[--imbalance-factor K]`.

Finds every run that main.py (or evaluate.py) wrote under the folders, at any depth, merges them (the folders of
several machines or SLURM array tasks, say), and writes into --out (default: the first folder):

- report.md: test bcr per loss x data set x imbalance factor (mean ± std over seeds, the best of each column in
  bold), a table of shot-group accuracies per data set, the incomplete or crashed runs, and the figures;
- report.csv: one row per (run folder, seed), every scalar test metric beside the settings that identify it;
- report_cells.csv: one row per table cell (mean, std, n of each metric over seeds);
- bcr_vs_imbalance.png, per_class_<dataset>_IF<k>.png, confusion_<dataset>_IF<k>.png, curves_<dataset>_IF<k>.png
  (the selection split's bcr and the training loss after every epoch);
- reliability.png (a reliability diagram per run, evaluations included) and shifted_accuracy.png (top-1 accuracy
  on the 11 shifted test sets, forward50 ... uniform ... backward50, with and without each set's prior: a line per
  run).

Runs are pooled over seeds only when everything else in their config is the same (paths, logging and other
settings that do not change what is trained aside); runs that differ otherwise get rows of their own, labelled
with the settings that set them apart.
"""
# The docstring above is the --help text. The parts live in reporting/ (runs.py reads the runs, pooling.py pools
# seeds into cells, tables.py and figures.py write the outputs); this file parses the command line and joins them.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checkpoint import output_glob, output_paths
from reporting.calibration_figures import calibration_figures
from reporting.figures import make_figures
from reporting.runs import common_root, find_runs
from reporting.tables import write_cells_csv, write_markdown, write_runs_csv
from storage import fault_line


class ReportError(Exception):
    """Nothing to report on; main() prints it as one line."""


def report(roots: Path | list[Path], factor=None, out: Path | None = None) -> list[Path]:
    """Write every output of the report for the runs under `roots`, merged, into `out` (default: the first of
    `roots`); returns the files written."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    for root in roots:
        if not root.is_dir():
            raise ReportError(f"{root} is not a folder: pass the DEFAULT.savedir of your runs, e.g. ./results")
    runs = find_runs(roots)
    if not runs:
        raise ReportError(f"no runs under {' '.join(map(str, roots))}: no {output_glob('config')}, "
                          f"{output_glob('results')} or {output_glob('last')}")
    for run in (run for run in runs if run.damaged):  # left out of the tables, said here and in report.md
        print(f"skipped {run.folder / output_paths(run.folder, run.seed)['results'].name}: {run.note}", file=sys.stderr)
    out = out or roots[0]
    out.mkdir(parents=True, exist_ok=True)
    root = common_root(roots)
    complete = [run for run in runs if run.status == "complete"]
    figures, notes = make_figures(out, complete, factor)
    scored = calibration_figures(out, [run for run in runs if run.status != "incomplete"], root)  # evaluations too
    figures, notes = figures + scored[0], notes + scored[1]
    write_markdown(out / "report.md", root, runs, figures, notes)
    write_runs_csv(out / "report.csv", root, [run for run in runs if run.status != "stale"])  # report.md names them
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
    args = parser.parse_intermixed_args(argv)  # options may sit between the folders
    factor = args.imbalance_factor
    if factor is not None and factor.is_integer():
        factor = int(factor)
    try:
        written = report(args.results_dirs, factor, args.out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # a full, failing or read-only disk, named in one line (storage.py); others are bugs
        if (line := fault_line(error)) is None:
            raise
        sys.exit(f"error: {line}")
    print(f"wrote {len(written)} files to {args.out or args.results_dirs[0]}:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
