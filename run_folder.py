"""Where a run's files go, checked before any work: the run folder's default name, a savedir that can hold it, and
the lock that keeps two processes out of one seed of one run folder (report.py reads it to tell a run training now
from one that stopped)."""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from config import LIST_BENCHMARKS
from errors import ConfigError, StorageError
from storage import is_write_fault, name_too_long, nearest_existing, rewrite, write_fault

# Beside a seed's outputs while a process trains it: "pid host", held with flock, removed at the end
LOCK_NAME = ".seed{seed}.lock"
LOCK_WAIT = 5  # seconds a second process waits for the lock before it is refused


def default_exp_name(cfg, overlays: list) -> str:
    """The run folder's name from the settings that tell runs apart, as run.sh names them: the loss, the imbalance
    and each overlay file's name (the recipe), e.g. BalancedSoftmax-IF_100-ldam_200ep."""
    parts = [cfg.LOSS.name, _imbalance(cfg.DATASET), *(Path(overlay).stem for overlay in overlays)]
    return "-".join(part for part in parts if part)


def _imbalance(data) -> str:
    """IF_<k>, step_IF_<k> or subset_<file>; "" where the data set's own counts are trained (a list benchmark, an
    image folder kept as it is)."""
    if data.train_subset is not None:
        return f"subset_{Path(data.train_subset).stem}"
    if data.name in LIST_BENCHMARKS or (data.name == "ImageFolderLT" and data.imbalance_type is None):
        return ""
    if data.imbalance_type is None:
        return "IF_1"
    factor = data.imbalance_factor
    kind = "" if data.imbalance_type == "exp" else f"{data.imbalance_type}_"
    return f"{kind}IF_{int(factor) if float(factor).is_integer() else factor}"


def check_writable(folder: Path, key: str) -> None:
    """`folder` exists as a writable folder, or can be made one: its nearest existing parent is a writable folder."""
    path = Path(folder).absolute()
    if (piece := name_too_long(path)) is not None:  # first: a name too long cannot even be looked up
        shorten = "DEFAULT.exp_name (or the folder names of DEFAULT.savedir)" if key == "DEFAULT.savedir" else key
        raise ConfigError(f"{key} {folder}: a name in it is longer than the file system allows, {piece}: shorten "
                          f"{shorten}")
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{key} {folder}: {existing} is not a folder: pick a folder, or a path where one can be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {folder}: {existing} is not writable: pick a folder you can write to")


class RunLock:
    """Held while a process trains one seed of a run folder (`with RunLock(folder, seed):`): a second process that
    would train it too is refused, and report.py (`holder`) tells a run training now from one that stopped. flock
    releases it when the process dies, however it dies. Only the process that may `hold` it takes it (the main one
    of a multi-process run); every process checks first that DEFAULT.savedir can hold the folder. Folders made for
    the lock that stay empty are removed again."""

    def __init__(self, folder: Path, seed: int, hold: bool = True) -> None:
        self.path, self.hold = Path(folder) / LOCK_NAME.format(seed=seed), hold
        self.file, self.made = None, []

    def __enter__(self) -> RunLock:
        check_writable(self.path.parent, "DEFAULT.savedir")
        if not self.hold:
            return self
        self.made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._take()
        except (ConfigError, OSError):
            self._tidy()
            raise
        return self

    def _take(self) -> None:
        while True:
            file = open(self.path, "a+")  # noqa: SIM115  kept open while the lock is held
            try:
                _flock_within(file, LOCK_WAIT)
            except OSError:
                file.seek(0)
                who = file.read().strip() or "its process is unknown"
                file.close()
                raise ConfigError(f"{self.path.parent} is being trained by another process ({who}) for this seed: "
                                  "wait for it to end, or pick a new DEFAULT.exp_name") from None
            # the process that held it may have removed the file between our open and our flock: take the new one
            if self.path.exists() and os.path.samestat(os.fstat(file.fileno()), os.stat(self.path)):
                break
            file.close()
        try:
            rewrite(file, f"pid {os.getpid()} on {socket.gethostname()}\n")
        except OSError as error:  # a full disk: no empty lock file stays to say nothing about who held it
            self.path.unlink(missing_ok=True)
            file.close()
            if is_write_fault(error):
                raise StorageError(write_fault(self.path, error)) from None
            raise
        self.file = file

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()
            self.file = None
        self._tidy()

    def _tidy(self) -> None:
        for folder in self.made:  # deepest first; a folder that holds anything stays
            try:
                folder.rmdir()
            except OSError:
                break


def _flock_within(file, seconds: float) -> None:
    """Take `file`'s exclusive flock, trying for `seconds`: a run that has just stopped may leave children it forked
    (DataLoader workers) that share its lock for a moment as they exit. Raises OSError where it stays held."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def holder(folder: Path, seed: int) -> str | None:
    """Who trains seed `seed` of `folder` now ("pid 123 on host"), None where no process holds its lock."""
    path = Path(folder) / LOCK_NAME.format(seed=seed)
    try:
        with open(path) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return file.read().strip() or "another process"
    except OSError:
        return None
    return None
