"""Writing files so that a fault never spoils one: every file a command writes goes through `atomic_write` (a
temporary file beside it, synced to disk, then renamed over it, the folder synced too), and a write that fails (a
full disk, a failing or read-only one, a name too long) ends in a StorageError, one line naming the file, what
failed and what to do. This module imports nothing of ours but the error types."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from errors import StorageError

# What a failed write says about the file system it was on, by errno, and what the user can do about it
FAULTS = {
    errno.ENOSPC: ("no space left on {mount}", "free some space there (or point the output elsewhere)"),
    errno.EDQUOT: ("the disk quota on {mount} is used up", "free some space within your quota"),
    errno.EIO: ("input/output error on {mount} (a failing disk or a dropped network mount)",
                "check the device and that it is mounted"),
    errno.EROFS: ("{mount} is mounted read-only", "remount it writable (or point the output elsewhere)"),
    errno.ENAMETOOLONG: ("a name in the path is longer than the file system on {mount} allows",
                         "shorten DEFAULT.exp_name, DEFAULT.savedir or --out"),
    errno.EACCES: ("permission denied on {mount}", "make the folder writable (or point the output elsewhere)"),
    errno.EPERM: ("permission denied on {mount}", "make the folder writable (or point the output elsewhere)"),
    errno.EFBIG: ("the file is larger than the file system on {mount} allows", "point the output elsewhere"),
}
AGAIN = "then run the same command again: what was saved before stays whole"
# torch.save raises RuntimeError, not OSError, when its writer fails (inline_container.cc: "unexpected pos", "file
# write failed"); these words tell such an error from any other RuntimeError
TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")
LOW_SPACE = 64 * 2**20  # bytes free below which a torch writer's failure is taken for a full disk


def atomic_write(path: Path, write, tmp: Path | None = None) -> None:
    """Call `write(temporary_path)`, sync what it wrote, then move it over `path` and sync the folder: a crash or a
    failed write never leaves half a file, nor a temporary one where the write raised. `tmp` names the temporary
    file where several processes may write one file at once (default: `.<name>.tmp` beside it)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        _sync(tmp)
        os.replace(tmp, path)
        _sync(path.parent)
    except BaseException as error:  # an error or Ctrl-C: the temporary file goes; what a killed process leaves, the
        # next write of the same file replaces. The line is made first, while the failed file still fills the disk
        line = write_fault(path, error) if is_write_fault(error) else None
        tmp.unlink(missing_ok=True)
        if line:
            raise StorageError(line) from None
        raise


def rewrite(file, text: str) -> None:
    """Replace the whole of an open text file's content with `text` and sync it (the run lock, rewritten in place
    because other processes hold it open)."""
    file.seek(0)
    file.truncate(0)
    file.write(text)
    file.flush()
    _sync(Path(file.name), file.fileno())


def _sync(path: Path, fd: int | None = None) -> None:
    """Flush a file's (or a folder's) data to the disk: a rename is durable only once what it renames is."""
    if fd is not None:
        os.fsync(fd)
        return
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_write_fault(error: BaseException) -> bool:
    """Whether `error` is the storage failing (a full, failing or read-only disk), not a bug."""
    if isinstance(error, StorageError):
        return False  # already said
    if isinstance(error, OSError):
        return error.errno in FAULTS
    return isinstance(error, RuntimeError) and any(word in str(error) for word in TORCH_WRITE_FAILURES)


def fault_line(error: OSError) -> str | None:
    """What an entry point prints for an OSError that reached it: the StorageError's line, the line for a storage
    fault raised elsewhere (a folder made on a full disk), None for any other error (a bug: its traceback stays)."""
    if isinstance(error, StorageError):
        return str(error)
    return write_fault(error.filename, error) if is_write_fault(error) else None


def write_fault(path: Path | str | None, error: BaseException) -> str:
    """The one line for a failed write of `path`: the file, what failed, what to do."""
    path = Path(path) if path else Path(getattr(error, "filename", None) or ".")
    mount = mount_point(path)
    if isinstance(error, OSError) and error.errno in FAULTS:
        what, todo = FAULTS[error.errno]
    elif _free(mount) < LOW_SPACE:  # torch's writer names no errno: a nearly full disk explains it
        what, todo = FAULTS[errno.ENOSPC]
        what += f" ({_free(mount) // 2**20} MiB free)"
    else:
        what, todo = f"torch could not write it ({' '.join(str(error).split())[:100]})", "check the disk"
    return f"cannot write {path}: {what.format(mount=mount)}: {todo}, {AGAIN}"


def nearest_existing(path: Path) -> Path:
    """`path` or its nearest parent that exists (a name too long to look up counts as missing)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            os.stat(candidate)
            return candidate
        except OSError:  # missing, or ENAMETOOLONG, which Path.exists raises
            continue
    return Path("/")


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds (or would hold) `path`."""
    existing = nearest_existing(path)
    while not os.path.ismount(existing):
        existing = existing.parent
    return existing


def _free(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def name_too_long(path: Path) -> str | None:
    """The first piece of `path` longer than its file system allows for a name, as "<piece> (N bytes, at most M)",
    else None: a run refused before training, instead of failing at its first write."""
    path = Path(path).absolute()
    existing = nearest_existing(path)
    limit = os.pathconf(existing, "PC_NAME_MAX")
    for piece in path.parts:
        if len(os.fsencode(piece)) > limit:
            return f"{piece[:40]}... ({len(os.fsencode(piece))} bytes, at most {limit} on {mount_point(existing)})"
    if len(os.fsencode(str(path))) + 64 > os.pathconf(existing, "PC_PATH_MAX"):  # 64: the files written inside it
        return f"{str(path)[:40]}... (the whole path, {len(os.fsencode(str(path)))} bytes)"
    return None
