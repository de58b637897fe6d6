"""Writing outputs all or nothing: a folder, files added to a folder, or one file.

Everything is written under a hidden name first, beside (or inside) where it goes, and renamed into place
only when it is complete (a rename within one file system is atomic), so a crash or Ctrl-C never leaves a
half-written output under its final name, and an earlier output is replaced only by a complete new one.
Outputs get the permissions an ordinary mkdir or open() gives (the umask's), not tempfile's private ones.

Used for the predictor folder (training/learning.py), predict.py --out (inference/predict.py), the Hugging
Face folder (export/hf_folder.py) and the ONNX files (export/onnx_export.py). spark/score_spark.py writes
through Hadoop's file system API (hdfs://, s3a://), so it keeps its own writer there.
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike) -> Iterator[Path]:
    """Write the folder `output` all or nothing: the block writes into the empty folder this yields (hidden,
    beside `output`). When the block ends, that folder becomes `output`; an existing `output` is replaced as
    a whole, and only then. If the block raises (or Ctrl-C), `output` stays as it was (absent, or the earlier
    folder) and nothing is left behind; what a killed process left behind is deleted by the next call."""
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(output.parent, f".{output.name}.partial-*", f".{output.name}.old-*")
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        staging.chmod(0o777 & ~umask())  # mkdtemp makes it private; the output is an ordinary folder
        yield staging
        ordinary_permissions(staging)
        swap_in(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
def atomic_files(folder: str | os.PathLike, name: str, order: Sequence[str] = ()) -> Iterator[Path]:
    """Add files to the existing folder `folder` only if they are all written: the block writes them into the
    empty folder this yields (hidden, inside `folder`: .`name`-*). When the block ends, each file left there is
    renamed into `folder`, replacing one of the same name: the names in `order` last, in that order (so a file
    that readers look for first can come last), after any others. If the block raises, `folder` is unchanged."""
    folder = Path(folder).resolve()
    clear_leftovers(folder, f".{name}-*")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    try:
        yield staging
        ordinary_permissions(staging)
        names = sorted(p.name for p in staging.iterdir() if p.name not in order)
        for file in [*names, *(n for n in order if (staging / n).exists())]:
            os.replace(staging / file, folder / file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def swap_in(new: Path, target: Path) -> None:
    """Rename the folder `new` to `target`. An existing `target` is moved aside first, then deleted; if the
    rename fails, it is put back."""
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    remove(old)


def clear_leftovers(folder: str | os.PathLike, *patterns: str) -> None:
    """Delete what a killed process left in `folder`: the names matching `patterns`."""
    for pattern in patterns:
        for stale in Path(folder).glob(pattern):
            remove(stale)


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
