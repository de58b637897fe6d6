"""Google Colab: install what the notebook needs that Colab lacks, and keep a run's files on Google Drive.

The notebook's set-up cell calls `setup()`, and the cell after its parameters calls `keep_on_drive()`.
Nothing here imports TensorFlow, NumPy or pandas: `setup()` must run before any of them is imported.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REQUIREMENTS = "requirements-colab.txt"
DRIVE_MOUNT = "/content/drive"  # where Colab mounts Google Drive; "My Drive" is DRIVE_MOUNT/MyDrive


def in_colab() -> bool:
    """Whether this is a Colab kernel (Colab imports google.colab when the kernel starts)."""
    return "google.colab" in sys.modules


def setup(requirements: str | os.PathLike = REQUIREMENTS) -> dict[str, tuple[str | None, str]]:
    """Install `requirements` with pip and report what changed.

    Colab's own TensorFlow, tf_keras, NumPy and pandas are kept (requirements-colab.txt says why);
    what pip installs or replaces is listed. If it replaced a package this kernel has already imported,
    the old version stays in memory, so the function says to restart the session, and only then.
    Returns {name: (old version or None, new version)}.
    """
    started = time.time()
    before = versions()
    print(f"installing {requirements} (about a minute on Colab)...", flush=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "-r", requirements], capture_output=True, text=True)
    if pip.returncode != 0:
        print(pip.stdout + pip.stderr, file=sys.stderr)
        raise RuntimeError(f"pip could not install {requirements} (its messages are above); "
                           "check the runtime has internet access, then run this cell again.")
    after = versions()
    changed = {name: (before.get(name), version) for name, version in after.items() if before.get(name) != version}
    for name, (old, new) in sorted(changed.items()):
        print(f"  {name} {old} -> {new}" if old else f"  {name} {new} (new)")
    if not changed:
        print("  everything was installed already")
    unhappy = sorted(set(re.findall(r"^(\S+) \S+ requires ", pip.stderr, re.MULTILINE)))
    if unhappy:
        print(f"pip notes that some of Colab's preinstalled packages want other versions ({', '.join(unhappy)}); "
              "this notebook does not use them.")
    stale = [name for name, (old, _) in changed.items() if old and imported(name)]
    print(f"set-up took {time.time() - started:.0f} s")
    if stale:
        print(f"RESTART NEEDED: this session had already imported {', '.join(sorted(stale))}, which the install "
              "replaced. Choose Runtime > Restart session, then run the notebook again from the top.")
    return changed


def versions() -> dict[str, str]:
    """{distribution name: version} of every installed Python package."""
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported(name: str) -> bool:
    """Whether any module of the installed distribution `name` is loaded in this process (read from its
    file list; `google.protobuf` counts for protobuf, but the shared `google` namespace does not)."""
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        return False
    for file in files:
        if file.suffix == ".py":
            parts = file.with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if module in sys.modules:
                return True
    return False


def keep_on_drive(folder: str | os.PathLike, output: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                  checkpoint_dir: str | os.PathLike | None = None) -> tuple[Path, Path, Path | None]:
    """Mount Google Drive and put the run's files under `folder`. Returns (output, data_dir, checkpoint_dir).

    Relative paths are taken under `folder`: the predictor goes to folder/output, the downloaded
    splits to folder/data, the checkpoints (by default) to folder/output/checkpoints. A runtime
    that is recycled loses /content, but not these: a later session loads the predictor from
    there, and `resume = True` continues an interrupted training from its last checkpoint.
    """
    from google.colab import drive

    drive.mount(DRIVE_MOUNT)
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"{folder.parent} does not exist: is Google Drive mounted at {DRIVE_MOUNT}? "
                                "Set drive_folder to a folder inside /content/drive/MyDrive.")
    folder.mkdir(exist_ok=True)
    on_drive = lambda path: None if path is None else folder / path  # noqa: E731  (absolute paths stay)
    output = on_drive(output)
    data_dir = on_drive(data_dir or "data")
    print(f"keeping the predictor in {output}, the checkpoints in {on_drive(checkpoint_dir) or output / 'checkpoints'}"
          f" and the IMDB splits in {data_dir}")
    return output, data_dir, on_drive(checkpoint_dir)


def flush_drive() -> None:
    """Write everything still waiting in Colab's Drive cache to Google Drive, and unmount it.

    Colab's Drive mount uploads in the background; Google's `flush_and_unmount` waits until it is done.
    Run the *Where the files live* cell again to mount it again.
    """
    from google.colab import drive

    drive.flush_and_unmount()
    print("everything is written to Google Drive (now unmounted)")
