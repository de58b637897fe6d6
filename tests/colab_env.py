"""Python environments with Google Colab's package versions, built with uv from ../shared/colab/pip-freeze.txt.

- build_colab_like(): the notebook's runtime: every package of requirements.txt that Colab has, at Colab's
  version (TensorFlow 2.20, transformers 5, ...), on the newest Python here (tests/test_colab.py).
- build_colab_own(): what a later Colab session that installs nothing has for the Hugging Face folder:
  Colab's transformers, tokenizers, huggingface_hub and safetensors, with every package they need at Colab's
  version, ipykernel (Colab's) for a notebook kernel, and a CPU PyTorch; no ktrain, TensorFlow or tf_keras
  (tests/test_hf_folder.py, benchmarks/later_session.py).

Colab's PyTorch (2.11.0+cpu, for Python 3.13) comes from PyTorch's own index, which is not reachable here, and
PyPI's builds of it carry several GB of CUDA libraries. So build_colab_own() takes the CPU build this machine
holds for requirements-export.txt (torch 2.13.0, Python 3.11, found by pip) on that Python.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLAB = ROOT.parent / "shared" / "colab"

# Colab's packages that need transformers, tokenizers or huggingface_hub, whose versions the set-up cell changes.
# Installed without their own dependencies (torch among them): they are here for pip to check them, as on Colab.
HF_DEPENDENT = ["accelerate", "datasets", "diffusers", "gradio", "gradio-client", "hf-gradio", "kagglehub", "peft",
                "sentence-transformers", "timm"]
# What a later session's pipeline("text-classification") needs of Colab's packages (their own needs follow).
HF_SET = ["transformers", "tokenizers", "huggingface-hub", "safetensors"]


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    """{canonical name: (name, version)} of the `name==version` lines of a requirements or freeze file."""
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].split(";")[0].strip()
        if "==" in line and "@" not in line:
            name, version = line.split("==", 1)
            found[canonical(name)] = (name.strip(), version.strip())
    return found


def colab_pins():
    return pins(COLAB / "pip-freeze.txt")


def colab_packages():
    """Our pinned set's packages that Colab has, at Colab's versions: `name==version` lines."""
    colab, ours = colab_pins(), pins(ROOT / "requirements.txt")
    return [f"{colab[n][0]}=={colab[n][1]}" for n in sorted(set(colab) & set(ours))]


def colab_python_version():
    return (COLAB / "os-info.txt").read_text().split("Python ")[1].split()[0]


def newest_python():
    """The newest CPython 3.11+ on this machine (Colab has 3.13): its path and version."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(14, 10, -1)]
    candidates += sorted(Path.home().glob(".pyenv/versions/3.1[1-9]*/bin/python3.1?"), reverse=True)
    best = None
    for python in filter(None, candidates):
        probe = subprocess.run([str(python), "-c", "import sys, venv; print('%d.%d.%d' % sys.version_info[:3])"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            version = tuple(map(int, probe.stdout.split(".")))
            if best is None or version > best[1]:
                best = (str(python), version)
    return best


def installed(python):
    """{canonical name: version} of what `python`'s environment holds."""
    out = subprocess.run([python, "-c", "import importlib.metadata as m, json; print(json.dumps("
                          "{d.metadata['Name']: d.version for d in m.distributions()}))"],
                         capture_output=True, text=True, check=True).stdout
    return {canonical(k): v for k, v in json.loads(out).items()}


def uv(*args):
    subprocess.run([sys.executable, "-m", "uv", *map(str, args)], check=True)


def build_colab_like(folder):
    """The notebook's Colab-like runtime in `folder`: (python, (major, minor, micro), {name: version})."""
    found = newest_python()
    assert found, "no CPython 3.11 or newer found to build the Colab-like environment with"
    python, version = found
    folder = Path(folder)
    requirements = folder.parent / f"{folder.name}-packages.txt"
    requirements.write_text("\n".join(colab_packages()) + "\n")
    uv("venv", "-q", "--seed", "--python", python, folder)
    env_python = folder / "bin" / "python"
    uv("pip", "install", "-q", "--compile-bytecode", "--python", env_python, "-r", requirements)  # compiled as pip does
    colab = colab_pins()
    uv("pip", "install", "-q", "--compile-bytecode", "--no-deps", "--python", env_python,
       *[f"{colab[n][0]}=={colab[n][1]}" for n in HF_DEPENDENT])
    return str(env_python), version, installed(str(env_python))


def cpu_torch_wheel(folder):
    """The CPU build of requirements-export.txt's torch that this machine holds, copied into `folder` by pip
    (from its find-links; no index is asked), or None when there is none."""
    version = pins(ROOT / "requirements-export.txt")["torch"][1]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-index",
                             "--only-binary=:all:", "-d", str(folder), f"torch=={version}"],
                            capture_output=True, text=True)
    wheels = sorted(Path(folder).glob(f"torch-{version}+cpu-*.whl"))
    return wheels[0] if result.returncode == 0 and wheels else None


def build_colab_own(folder, torch_wheel, compile_bytecode=False):
    """A later session's environment in `folder` (module docstring): (python, {name: version}).

    `compile_bytecode`: compile every module at install, as pip (and so Colab) does: 20 s more here, but each
    process then starts faster (for timing). Without it, a test that starts one process there is done sooner."""
    folder = Path(folder)
    tag = re.search(r"-cp3(\d+)-", torch_wheel.name).group(1)
    python = sys.executable if sys.version_info[:2] == (3, int(tag)) else shutil.which(f"python3.{tag}")
    assert python, f"no Python 3.{tag} for {torch_wheel.name}"
    # Every package at Colab's version, but for setuptools, which torch 2.13 needs newer than Colab's 75.2.
    constraints = folder.parent / f"{folder.name}-constraints.txt"
    constraints.write_text("\n".join(f"{name}=={version}" for key, (name, version) in colab_pins().items()
                                     if key != "setuptools") + "\n")
    uv("venv", "-q", "--seed", "--python", python, folder)
    env_python = folder / "bin" / "python"
    uv("pip", "install", "-q", *(["--compile-bytecode"] if compile_bytecode else []), "--python", env_python,
       "-c", constraints, torch_wheel, *HF_SET, "ipykernel")
    return str(env_python), installed(str(env_python))


def fake_colab_kernel(base, name, python, env):
    """A Jupyter kernel spec `name` under base/jupyter (put that folder in JUPYTER_PATH): kernels that run `python`,
    import the stand-in google.colab at start as Colab's kernel does (tests/fake_colab), with `env` set.
    Returns the folder."""
    ipython, jupyter = Path(base) / "ipython", Path(base) / "jupyter"
    startup = ipython / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-google-colab.py").write_text("import google.colab  # as Colab's kernel does at start\n")
    spec = jupyter / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": name,
        "language": "python",
        "env": {"PYTHONPATH": str(ROOT / "tests" / "fake_colab"), "IPYTHONDIR": str(ipython), **env}}))
    return jupyter
