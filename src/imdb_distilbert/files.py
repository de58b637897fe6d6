"""Writing outputs all or nothing, only over what this project wrote, one run at a time.

Everything is written under a hidden name first, beside where it goes, and put in place by one rename only when
it is complete, so a crash or Ctrl-C never leaves a half-written output under its final name, and an earlier
output is replaced only by a complete new one. Replacing an existing folder is one atomic step on Linux
(renameat2's RENAME_EXCHANGE swaps the two names); elsewhere, and on file systems without it, it is two renames,
and a crash between them is repaired by the next write (see recover). Outputs get the permissions an ordinary
mkdir or open() gives (the umask's), not tempfile's private ones.

Every folder written as a whole holds a small marker file (MARKER), written last: an existing folder is replaced
only if it holds one (or is empty), never because it looks like ours, so a mistyped --output cannot delete a
user's folder. A run holds a lock on its output (output_lock) while it writes, so a second run on the same
output is refused with one sentence instead of deleting the first one's work.

Used for the predictor folder (training/learning.py), predict.py --out (inference/predict.py), the Hugging
Face folder (export/hf_folder.py) and the ONNX files (export/onnx_export.py). spark/score_spark.py writes
through Hadoop's file system API (hdfs://, s3a://), so it keeps its own writer there.
"""

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from imdb_distilbert.errors import UserError

MARKER = ".imdb-distilbert"  # in every folder written as a whole: this project wrote it, and may replace it


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike, flag: str = "--output") -> Iterator[Path]:
    """Write the folder `output` all or nothing: the block writes into the empty folder this yields (hidden,
    beside `output`). When the block ends, that folder, with the marker added, becomes `output` in one rename;
    an existing `output` is replaced as a whole, and only then, and only if it is empty or holds the marker (else
    a UserError naming `flag`). If the block raises (or Ctrl-C), `output` stays as it was (absent, or the earlier
    folder) and nothing is left behind; what a killed process left behind is dealt with by the next call."""
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(output):
        recover(output)
        check_replaceable(output, flag)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        try:
            staging.chmod(0o777 & ~umask())  # mkdtemp makes it private; the output is an ordinary folder
            yield staging
            mark(staging)  # last: a staging folder with the marker is complete (recover relies on it)
            ordinary_permissions(staging)
            swap_in(staging, output)
        finally:
            remove(staging)


def write_folder(output: str | os.PathLike, files: Mapping[str, str | bytes]) -> Path:
    """Write `files` (name -> text or bytes) as the folder `output`, all or nothing. Returns the folder (resolved)."""
    with atomic_folder(output) as folder:
        write_files(folder, files)
    return Path(output).resolve()


def write_files(folder: str | os.PathLike, files: Mapping[str, str | bytes]) -> None:
    """Write `files` (name -> text, as UTF-8, or bytes) into `folder`."""
    for name, content in files.items():
        (Path(folder) / name).write_bytes(content if isinstance(content, bytes) else content.encode())


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Add files to the existing folder `folder` only if they are all written, in one rename: the block writes
    them into the empty folder this yields (hidden, beside `folder`). When the block ends, a copy of `folder`
    made of hard links (copies where the file system has none), with those files added or replacing ones of the
    same name, replaces `folder` as a whole. Files a user keeps in `folder` stay. If the block raises, `folder`
    is unchanged."""
    folder = Path(folder).resolve()
    with output_lock(folder):
        recover(folder)
        added = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        staging = added.with_name(added.name + "-all")
        try:
            yield added
            ordinary_permissions(added)  # not the copy's: its links share the original files' permissions
            shutil.copytree(folder, staging, symlinks=True, copy_function=link_or_copy)
            for new in added.iterdir():
                remove(staging / new.name)
                os.replace(new, staging / new.name)
            swap_in(staging, folder)
        finally:
            remove(added)
            remove(staging)


def link_or_copy(source: str, target: str) -> None:
    """A hard link to `source` at `target` (no bytes copied); a copy where the file system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def atomic_file(path: str | os.PathLike, content: str | bytes) -> None:
    """Write `content` (text: as UTF-8, line ends as given; or bytes) to the file `path` completely or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the output is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def mark(folder: str | os.PathLike) -> None:
    """Write the marker that says this project wrote `folder` (and may replace it)."""
    note = {"written_by": "imdb-distilbert", "program": Path(sys.argv[0]).name or "python",
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(folder) / MARKER).write_text(json.dumps(note) + "\n")


def is_ours(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds the marker this project writes into every folder it writes as a whole."""
    return (Path(folder) / MARKER).is_file()


def check_replaceable(output: str | os.PathLike, flag: str = "--output") -> None:
    """A UserError unless `output` is absent, an empty folder, or a folder this project wrote (its marker)."""
    output = Path(output)
    if output.is_file() or output.is_symlink():
        raise UserError(f"{flag} {output} is a file; give a folder path.")
    if output.is_dir() and any(output.iterdir()) and not is_ours(output):
        raise UserError(f"{flag} {output} holds files this project did not write (it has no {MARKER} marker, which "
                        "every folder the project writes holds; folders from versions before 2026-12 lack it too), "
                        "so it is not replaced; choose a new or empty folder, or move this one away.")


def swap_in(new: Path, target: Path) -> None:
    """Put the folder `new` in place of `target` by one rename; an existing `target` ends up under the name `new`
    (the caller deletes it). Where the two cannot be exchanged in one step, `target` is moved aside first, then
    `new` renamed, and the old folder moved under the name `new`; a crash in between is repaired by recover."""
    if not os.path.lexists(target):
        os.replace(new, target)
    elif not exchange(new, target):
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
        remove(old)


def exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one atomic step (Linux's renameat2 with RENAME_EXCHANGE). False where the
    system or the file system cannot (macOS, Windows, some network and FUSE file systems such as Google Drive's)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not Linux with glibc 2.28 or later
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


def recover(output: Path) -> None:
    """Deal with what a killed writer of `output` left beside it (called holding output_lock). If `output` is
    missing because the writer was killed between two renames of swap_in, the complete new folder (a staging
    folder with the marker, which is written last) is put in place, or else the old one put back. Everything else
    (unfinished staging folders, old folders) is deleted."""
    stale = sorted(output.parent.glob(f".{output.name}.partial-*"), key=os.path.getmtime, reverse=True)
    old = sorted(output.parent.glob(f".{output.name}.old-*"), key=os.path.getmtime, reverse=True)
    if not os.path.lexists(output):
        complete = [p for p in stale if p.is_dir() and not p.name.endswith("-all") and is_ours(p)]
        if complete or old:
            os.replace((complete or old)[0], output)
            print(f"note: {output} was missing after an interrupted write; restored it from "
                  f"{'the complete new' if complete else 'the previous'} version", file=sys.stderr)
    for path in [*stale, *old]:
        if os.path.lexists(path):
            remove(path)


HELD: dict[Path, int] = {}  # output -> the file descriptor of its lock, for locks this process holds


@contextlib.contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[None]:
    """Hold the lock on `output` for the block: another process that asks for it while it is held gets a UserError
    saying which process writes there. Locks this process holds already (claim) are simply used again."""
    output = Path(output).resolve()
    if output in HELD:
        yield
        return
    claim(output)
    try:
        yield
    finally:
        release(output)


def claim(output: str | os.PathLike) -> None:
    """Take the lock on `output` until release() or the end of this process (train.py holds its --output's from its
    start, so that a second run is refused at once, not hours later). The lock is an OS file lock (flock) on a file
    in the temporary folder named after `output`'s path: it goes with the process, so a killed run leaves none."""
    output = Path(output).resolve()
    if output in HELD:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs are not serialised there
        HELD[output] = -1
        return
    folder = Path(tempfile.gettempdir()) / "imdb-distilbert-locks"
    folder.mkdir(exist_ok=True)
    path = folder / (hashlib.sha256(str(output).encode()).hexdigest()[:20] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{output} is being written by another run ({holder}); wait for it to finish, "
                        "or choose another output folder.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()}, {Path(sys.argv[0]).name or 'python'}".encode())
    HELD[output] = fd


def release(output: str | os.PathLike) -> None:
    """Give up the lock on `output` (if this process holds it)."""
    fd = HELD.pop(Path(output).resolve(), -1)
    if fd >= 0:
        os.close(fd)  # closing the descriptor releases the flock


def remove(path: str | os.PathLike) -> None:
    """Delete the folder or file `path`, as far as possible (errors ignored)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def ordinary_permissions(folder: str | os.PathLike) -> None:
    """Give the folders and files under `folder` the permissions mkdir and open() give (some writers, such as
    safetensors, make their files private)."""
    mask = umask()
    for parent, folders, names in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(parent, name), 0o777 & ~mask)
        for name in names:
            if not os.path.islink(os.path.join(parent, name)):  # a link's own permissions do not matter
                os.chmod(os.path.join(parent, name), 0o666 & ~mask)


def umask() -> int:
    """This process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Cells that a spreadsheet opens as a formula: =, +, - and @ start one; a tab or carriage return first lets one
# through in some programs (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """`text` for a CSV cell that people open in Excel or LibreOffice: a leading apostrophe when it starts like a
    formula (`=HYPERLINK(...)` would be a live link), so it is shown as text and never run; else unchanged."""
    return "'" + text if isinstance(text, str) and text.startswith(FORMULA_STARTS) else text
