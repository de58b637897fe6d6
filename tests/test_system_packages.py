"""tests/system-packages.sh: each missing package installed on its own, and one line for each that could not be."""

import os
import shutil
import subprocess

from conftest import ROOT

SCRIPT = ROOT / "tests" / "system-packages.sh"


def run(tmp_path, failing=(), root=True):
    """The script on a machine with none of the packages, whose apt-get refuses the `failing` ones:
    (what it printed, the apt-get calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    fakes = {
        "apt-get": f'echo "$*" >> {calls}\n'
                   f'for p in {" ".join(failing) or "none"}; do [ "${{@: -1}}" = "$p" ] && exit 100; done\nexit 0',
        "id": f"echo {0 if root else 1000}",
        "ldconfig": "exit 0",  # lists no libraries: tcmalloc is missing
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    os.symlink(shutil.which("grep"), bin_dir / "grep")  # and no java, no chromium on this PATH
    result = subprocess.run([shutil.which("bash"), str(SCRIPT)], capture_output=True, text=True,
                            env={"PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr
    return result.stdout, calls.read_text().splitlines() if calls.exists() else []


def test_each_package_on_its_own(tmp_path):
    printed, calls = run(tmp_path)
    assert printed == ""
    assert calls == ["install -y -qq libtcmalloc-minimal4", "install -y -qq openjdk-17-jre-headless",
                     "install -y -qq chromium"]


def test_one_that_cannot_be_installed_is_named_and_the_others_are_installed(tmp_path):
    printed, calls = run(tmp_path, failing=["chromium"])
    assert printed == "tests/system-packages.sh: could not install chromium\n"
    assert "install -y -qq openjdk-17-jre-headless" in calls and "update -qq" in calls  # retried after an update
    assert calls.count("install -y -qq chromium") == 2


def test_without_root_it_says_what_it_did_not_install(tmp_path):
    printed, calls = run(tmp_path, root=False)
    assert calls == []
    assert printed == ("tests/system-packages.sh: not installing libtcmalloc-minimal4 openjdk-17-jre-headless chromium "
                       "(needs apt-get and root); the tests that use them say so\n")
