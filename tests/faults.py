"""Fault injection for the suite, as SQLite's tests make the k-th I/O call fail for every k: `WriteFaults` counts the
files a command writes (every write goes through storage.atomic_write, or storage.rewrite for the run lock, and
each syncs the file once its bytes are written) and makes the k-th fail with an OSError of its errno, as a full or
failing disk would. At that moment it takes a digest of the watched folder: the state before that write, which the
command must leave as it is."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import storage

# The files a writer leaves only while it runs (the temporary file of a write, the run lock)
TRANSIENT = (".tmp", ".lock")


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` but the transient ones, by relative path, with the sha256 of its bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(TRANSIENT)}


def leftovers(folder: Path) -> list[str]:
    """Transient files that a finished or failed command left behind: there must be none."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(TRANSIENT) or ".partial" in p.name) \
        if folder.exists() else []


class WriteFaults:
    """Installed with `monkeypatch`: counts every file write (in `written`, the files' paths, in order) and makes
    the `fail_at`-th (1-based; None: none) raise OSError(`code`), with `before` the digest of `watched` just then."""

    def __init__(self, monkeypatch, watched: Path, fail_at: int | None = None, code: int = errno.ENOSPC) -> None:
        self.watched, self.fail_at, self.code = watched, fail_at, code
        self.written: list[Path] = []
        self.before: dict[str, str] | None = None
        sync = storage._sync

        def faulty_sync(path: Path, fd: int | None = None) -> None:
            if fd is None and path.is_dir():  # the folder's sync after a rename: not a write of its own
                return sync(path, fd)
            self.written.append(path)
            if len(self.written) == self.fail_at:
                self.before = digest(self.watched)
                raise OSError(self.code, os.strerror(self.code), str(path))
            return sync(path, fd)
        monkeypatch.setattr(storage, "_sync", faulty_sync)

    @property
    def names(self) -> list[str]:
        """The files written, under their final names (a temporary `.name.tmp` as `name`)."""
        return [_final(path.name) for path in self.written]


    def under(self, folder: Path) -> set[str]:
        """The files written under `folder`, by their final paths relative to it (digest's keys)."""
        return {(path.parent / _final(path.name)).relative_to(folder).as_posix() for path in self.written
                if path.is_relative_to(folder)}


def _final(name: str) -> str:
    if name.endswith(".tmp") and name.startswith("."):
        return name[1:-4]
    return name.split(".partial")[0]


def errno_of(k: int, every: bool) -> list[int]:
    """The errors the k-th write is failed with: ENOSPC, then EIO (both where `every`, else one by turns)."""
    return [errno.ENOSPC, errno.EIO] if every else [(errno.ENOSPC, errno.EIO)[(k - 1) % 2]]
