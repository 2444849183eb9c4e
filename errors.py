"""The errors a user can fix, printed by the entry points as one line; this module imports nothing of ours, so any
module may raise them without an import cycle."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad config key or value; main.py prints it as one line and exits."""


class DatasetNotFoundError(FileNotFoundError):
    """The data is neither on disk nor downloadable; the message says where it looked and what to do."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the last good checkpoint stays in place."""


class StorageError(OSError):
    """A file could not be written (a full, failing or read-only disk): the message names the file, what failed and
    what to do, and the entry points print it as one line (see storage.py)."""
