"""Folders are replaced in one rename, only if the project wrote them, one writer at a time (files.py).

The crashes are real: a child process is killed with SIGKILL (no cleanup runs) at the worst moment, between
the renames of a replacement, and the next write (or the reader) must find a complete folder, old or new.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT

from imdb_distilbert import files
from imdb_distilbert.errors import UserError

CHILD_PRELUDE = f"""
import os, signal, sys, time
sys.path.insert(0, {str(ROOT / "src")!r})
from pathlib import Path
from imdb_distilbert import files
"""


# Child code: no atomic exchange (as on macOS), and SIGKILL right after the old folder is moved aside.
KILLED_BETWEEN_TWO_RENAMES = """files.exchange = lambda a, b: False
real = os.replace
def kill_after_moving_the_old_away(a, b):
    real(a, b)
    if ".old-" in str(b):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = kill_after_moving_the_old_away
"""


def child(code, before="", **kwargs):
    """Run `code` in a new Python process (after CHILD_PRELUDE and `before`); returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + before + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, **kwargs)


def folder_with(path, **contents):
    return files.write_folder(path, contents)


def read(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.name != files.MARKER}


def hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replacing_a_folder_is_one_rename(tmp_path):
    """Where the system can exchange two names (Linux), the old folder is never missing, not even for a moment:
    the old one is replaced by the new one in one step, and a kill right after it leaves the new one whole."""
    out = folder_with(tmp_path / "p", a="old", b="old")
    result = child(f"""
        real = os.replace
        def kill_at_second_rename(a, b):  # the two-rename way: kill between moving the old away and the new in
            real(a, b)
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = kill_at_second_rename
        with files.atomic_folder({str(out)!r}) as f:
            (f / "a").write_text("new")
            (f / "b").write_text("new")
        os.kill(os.getpid(), signal.SIGKILL)  # as if killed right after the exchange
    """)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert read(out) == {"a": "new", "b": "new"} and files.is_ours(out)


def test_a_kill_between_two_renames_is_repaired(tmp_path, monkeypatch):
    """Where names cannot be exchanged (macOS, Google Drive's FUSE), replacement is two renames; a kill between
    them leaves no folder under its name. The next write puts the complete new folder in place (not delete it,
    as it did) and then replaces it; leftovers of the killed run are gone."""
    out = folder_with(tmp_path / "p", a="old")
    result = child(before=KILLED_BETWEEN_TWO_RENAMES, code=f"""
        with files.atomic_folder({str(out)!r}) as f:
            (f / "a").write_text("new")
    """)
    assert result.returncode == -signal.SIGKILL and not out.exists()
    assert any(".old-" in name for name in hidden(tmp_path)) and any(".partial-" in n for n in hidden(tmp_path))
    files.recover(out.resolve())
    assert read(out) == {"a": "new"} and hidden(tmp_path) == []


def test_a_kill_before_the_new_folder_is_complete_keeps_the_old(tmp_path):
    out = folder_with(tmp_path / "p", a="old")
    result = child(before=KILLED_BETWEEN_TWO_RENAMES, code=f"""
        with files.atomic_folder({str(out)!r}) as f:
            (f / "a").write_text("new")
            os.remove(f / "a")  # the staging folder gets no marker: as if killed before it was complete
            files.mark = lambda folder: None
    """)
    assert result.returncode == -signal.SIGKILL and not out.exists()
    with files.atomic_folder(out) as f:
        assert read(out) == {"a": "old"}  # put back before anything else happens
        (f / "a").write_text("newer")
    assert read(out) == {"a": "newer"} and hidden(tmp_path) == []


def test_adding_files_to_a_folder_is_one_rename(tmp_path):
    """export.py adds its ONNX files to the predictor folder: killed after moving the first of them (it moved
    them one at a time), the folder must hold the old set or the new set, never a mix; a user's file stays."""
    out = folder_with(tmp_path / "p", **{"model.onnx": "old", "onnx.json": "old", "notes.txt": "mine"})
    result = child(f"""
        real, moved = os.replace, []
        def kill_at_second_move(a, b):
            real(a, b)
            moved.append(b)
            if len(moved) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = kill_at_second_move
        with files.atomic_files({str(out)!r}) as f:
            (f / "model.onnx").write_text("new")
            (f / "onnx.json").write_text("new")
            (f / "tokenizer.json").write_text("new")
    """)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert read(out) == {"model.onnx": "old", "notes.txt": "mine", "onnx.json": "old"}
    with files.atomic_files(out) as f:
        (f / "model.onnx").write_text("new")
        (f / "onnx.json").write_text("new")
    assert read(out) == {"model.onnx": "new", "notes.txt": "mine", "onnx.json": "new"} and hidden(tmp_path) == []


def test_adding_files_links_and_never_changes_the_old_files(tmp_path):
    out = folder_with(tmp_path / "p", big="weights", kept="x")
    before = (out / "big").stat().st_ino
    with files.atomic_files(out) as f:
        (f / "kept").write_text("replaced")
    assert (out / "big").stat().st_ino == before  # a hard link: no bytes copied
    assert read(out) == {"big": "weights", "kept": "replaced"}


def test_a_folder_without_the_marker_is_not_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="holds files this project did not write"), files.atomic_folder(mine):
        pass
    assert read(mine) == {"metrics.json": "{}"}
    (tmp_path / "empty").mkdir()
    files.write_folder(tmp_path / "empty", {"a": "1"})  # an empty folder may be used
    assert read(tmp_path / "empty") == {"a": "1"}


def test_a_second_writer_is_refused_and_the_first_finishes(tmp_path):
    """Two runs on one output: the second is refused with one sentence naming the first; it deleted the first
    one's staging folder as a killed run's leftover, so the first one failed."""
    out = tmp_path / "p"
    first = subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(f"""
        with files.atomic_folder({str(out)!r}) as f:
            (f / "a").write_text("first")
            print("writing", flush=True)
            time.sleep(3)
            (f / "b").write_text("first")
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "writing"
    with pytest.raises(UserError, match=r"is being written by another run \(process \d+"):
        files.write_folder(out, {"a": "second"})
    _, errors = first.communicate(timeout=60)
    assert first.returncode == 0, errors
    assert read(out) == {"a": "first", "b": "first"}
    files.write_folder(out, {"a": "third"})  # the lock went with the first process
    assert read(out) == {"a": "third"}


def test_train_refuses_an_output_another_run_is_writing(tmp_path):
    """train.py claims its --output when it starts (not when it saves, hours later)."""
    from conftest import assert_user_error, run_train

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(f"""
        files.claim({str(out)!r})
        print("claimed", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        started = time.time()
        assert_user_error(run_train("--output", out), f"{out} is being written by another run (process {holder.pid}")
        assert time.time() - started < 30 and not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_taken_again_in_the_same_process(tmp_path):
    """The notebook runs start() again in the same kernel: its own earlier claim does not refuse it."""
    files.claim(tmp_path / "p")
    files.claim(tmp_path / "p")
    files.write_folder(tmp_path / "p", {"a": "1"})
    files.release(tmp_path / "p")
    assert sorted(os.listdir(tmp_path / "p")) == sorted(["a", files.MARKER])
