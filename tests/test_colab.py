"""The notebook on Colab's own package set, with Google Drive.

A Colab-like Python environment is built from Google's published list of what a Colab runtime holds
(../shared/colab/pip-freeze.txt): every package of our pinned set (requirements.txt) that Colab has, at
Colab's version (tensorflow 2.20, tf_keras 2.20.1, transformers 5, numpy 2.1, ...), on the newest Python
this machine has. A kernel there imports a fake `google.colab` at start, as Colab's does (tests/fake_colab).
Then, as a user would:

1. a first session uploads the project as a zip, runs the set-up cell (the real pip install) and the
   notebook, with everything kept on the fake Drive; the runtime dies right after epoch 1 is saved;
2. a second session runs the whole notebook again with resume = True: training continues from Drive,
   and the predictor is saved there; the web page cells start src/serve.py, show it through (the fake)
   google.colab.output's port proxy, and stop it, and a cell put before the stop asks the server what the
   page asks; without PyTorch here, the Hugging Face folder cells say why they do nothing;
3. a third session (a fresh upload) runs only set-up, parameters, Drive and the prediction cells, and
   gets the same labels and probabilities from the predictor on Drive.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import synthetic
from colab_env import COLAB, build_colab_like, canonical, colab_pins, colab_python_version, fake_colab_kernel
from conftest import ROOT, SEED, at_least, report, unavailable
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from test_notebook import BROWSER, NOTEBOOK, assert_port_closed, check_tutorial_table, text_of

from imdb_distilbert.data import dataset

MOUNT = Path("/content/drive")  # where the notebook (colab/__init__.py) mounts Drive, as in Colab
DRIVE_FOLDER = MOUNT / "MyDrive" / "imdb-distilbert"  # the notebook's default drive_folder
# as TINY
PARAMS = {"epochs": 3, "lr": 2e-3, "batch_size": 8, "maxlen": 32, "seed": SEED, "precision": "float32", "sample": 400}
CHANGED_BY_SETUP = {"transformers": ("5.15.0", "4.54.1"), "tokenizers": ("0.22.2", "0.21.4"),
                    "huggingface-hub": ("1.27.0", "0.36.2")}


@pytest.fixture(autouse=True)
def colab_list():
    if not COLAB.is_dir():
        unavailable(f"{COLAB} (Google's Colab package list) is not here")


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    """A fresh virtual environment with Colab's versions: (python, {name: version})."""
    env_python, version, versions = build_colab_like(tmp_path_factory.mktemp("colab-env") / "venv")
    for name in ("tensorflow", "tf-keras", "transformers", "numpy", "pandas", "protobuf"):
        assert versions[name] == colab_pins()[name][1], name
    report(f"Colab-like environment: Python {'.'.join(map(str, version))} (Colab: {colab_python_version()}), "
           + ", ".join(f"{n} {versions[n]}" for n in ("tensorflow", "tf-keras", "transformers", "numpy", "pandas")))
    return env_python, versions


@pytest.fixture(scope="module")
def planned(colab_env, tmp_path_factory):
    """What pip would install in the fresh environment for requirements-colab.txt (its --dry-run report)."""
    out = tmp_path_factory.mktemp("plan") / "report.json"
    subprocess.run([colab_env[0], "-m", "pip", "install", "-q", "--dry-run", "--report", str(out),
                    "-r", str(ROOT / "requirements-colab.txt")], check=True, capture_output=True)
    return {canonical(i["metadata"]["name"]): (i["metadata"]["version"], i["download_info"]["url"])
            for i in json.loads(out.read_text())["install"]}


@pytest.fixture(scope="module")
def data_server(tmp_path_factory):
    """The IMDB splits' URL: complete 25,000-row synthetic splits on a real HTTP server on loopback."""
    folder = tmp_path_factory.mktemp("served")
    for seed, name in enumerate(dataset.SPLITS):
        synthetic.reviews(dataset.ROWS_PER_SPLIT, seed).to_excel(folder / name, index=False)
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    # The download checks the content against pinned digests: these are the synthetic splits'.
    digests = ",".join(f"{n}={dataset.fingerprint(dataset.read_split(folder / n))}" for n in dataset.SPLITS)
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", digests
    httpd.shutdown()


@pytest.fixture(scope="module")
def colab(colab_env, tmp_path_factory, data_server):
    """A Colab-like runtime: its /content folder, the project zip to upload, the Drive, and a kernel spec."""
    if MOUNT.exists() and not MOUNT.is_symlink():
        pytest.fail(f"{MOUNT} exists and is not the fake Drive's link: move it away to run this test")
    try:
        MOUNT.parent.mkdir(exist_ok=True)
    except PermissionError:
        unavailable(f"cannot create {MOUNT.parent} (the fake Drive's mount point) without root")
    base = tmp_path_factory.mktemp("colab")
    content, drive = base / "content", base / "drive"
    shown = base / "colab-output.jsonl"  # the calls of google.colab.output (tests/fake_colab)
    content.mkdir()
    # The project as a user uploads it: its files as git sees them (committed or not), zipped.
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    upload = base / "imdb-distilbert.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for name in filter(None, files):
            if (ROOT / name).is_file():
                archive.write(ROOT / name, name)
    jupyter = fake_colab_kernel(base, "colab-like", colab_env[0], {
        "FAKE_COLAB_DRIVE": str(drive), "FAKE_COLAB_UPLOAD": str(upload),
        "IMDB_DATA_URL": data_server[0], "IMDB_DATA_SHA256": data_server[1],
        "FAKE_COLAB_OUTPUT_LOG": str(shown), "HF_HOME": os.environ["HF_HOME"], "HF_HUB_OFFLINE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2"})
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(jupyter)
    yield {"content": content, "drive": drive, "shown": shown}
    os.environ.pop("JUPYTER_PATH") if old is None else os.environ.update(JUPYTER_PATH=old)
    if MOUNT.is_symlink():
        MOUNT.unlink()


def session(colab, params, keep=None, before_train=None, before_stop=None):
    """Run the notebook as a Colab session: a fresh kernel started in /content, with `params` injected after
    the parameters cell. `keep(cell)` picks the cells; `before_train` is code run just before training,
    `before_stop` just before the cell that stops the web page's server. Returns (executed notebook, error or None)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    if before_train:
        train_at = next(i for i, c in enumerate(nb.cells) if c.source.startswith("history = run.fit("))
        nb.cells.insert(train_at, nbformat.v4.new_code_cell(before_train))
    if before_stop:
        stop_at = next(i for i, c in enumerate(nb.cells) if c.source.strip() == "page.stop()")
        nb.cells.insert(stop_at, nbformat.v4.new_code_cell(before_stop))
    if keep:
        nb.cells = [c for i, c in enumerate(nb.cells) if i == at + 1 or keep(c)]
    if MOUNT.is_symlink():
        MOUNT.unlink()  # a new runtime: Drive is not mounted yet
    client = NotebookClient(nb, timeout=900, kernel_name="colab-like",
                            resources={"metadata": {"path": str(colab["content"])}})
    try:
        client.execute()
    except DeadKernelError as error:
        return nb, error
    return nb, None


def outputs(nb):
    return [text_of(c) for c in nb.cells if c.cell_type == "code"]


def output_of(nb, fragment):
    """The output of the first code cell whose source holds `fragment`."""
    return next(text_of(c) for c in nb.cells if c.cell_type == "code" and fragment in c.source)


DIE_AFTER_FIRST_EPOCH = """
import os, signal
from imdb_distilbert.training import learning
_save_checkpoint = learning.Checkpoints.on_epoch_end
def _runtime_recycled(self, epoch, logs=None):
    _save_checkpoint(self, epoch, logs)
    os.kill(os.getpid(), signal.SIGKILL)  # the runtime is recycled right after epoch 1 is saved
learning.Checkpoints.on_epoch_end = _runtime_recycled
"""


@pytest.fixture(scope="module")
def sessions(colab, colab_env, planned):  # `planned` first: it needs the environment as Colab has it
    """The three Colab sessions of the module docstring: {name: executed notebook}."""
    done = {}
    done["first"], died = session(colab, PARAMS, before_train=DIE_AFTER_FIRST_EPOCH)
    assert died is not None, "the first session was meant to die during training"
    done["state_after_first"] = json.loads((colab["drive"] / "MyDrive" / "imdb-distilbert" / "models" /
                                            "distilbert-imdb" / "checkpoints" / "state.json").read_text())
    done["second"], died = session(colab, {**PARAMS, "resume": True}, before_stop=BROWSER)
    assert died is None, died
    shutil.rmtree(colab["content"] / "imdb-distilbert")  # a new runtime: /content is empty again
    for name in os.listdir(colab["content"]):
        os.unlink(colab["content"] / name)

    def later(cell):
        return cell.cell_type == "code" and (
            "PROJECT_URL" in cell.source or "parameters" in cell.metadata.get("tags", [])
            or "colab.keep_on_drive(" in cell.source or "load_predictor(" in cell.source
            or "reviews = [" in cell.source)

    done["third"], died = session(colab, PARAMS, keep=later)
    assert died is None, died
    return done


def test_setup_cell_installs_what_colab_lacks_without_a_restart(sessions, planned, colab_env):
    setup = output_of(sessions["first"], "PROJECT_URL")
    assert "Saving imdb-distilbert.zip" in setup  # the project came as an upload
    for name, (old, new) in CHANGED_BY_SETUP.items():
        assert f"{name} {old} -> {new}" in setup, setup
    for name, (version, _) in planned.items():  # everything it installed is listed
        assert re.search(rf"^  {re.escape(name)} (\S+ -> )?{re.escape(version)}", setup, re.MULTILINE), (name, setup)
    assert "RESTART" not in setup and "set-up took" in setup
    # gradio 6.24 needs huggingface_hub >= 1.16: pip says so, and the cell passes it on in one line.
    assert re.search(r"pip notes that some of Colab's preinstalled packages want other versions \(.*gradio", setup)
    # It kept Colab's TensorFlow, tf_keras, NumPy, pandas and protobuf.
    assert not {"tensorflow", "tf-keras", "numpy", "pandas", "protobuf", "keras", "ml-dtypes"} & set(planned)
    took = int(re.search(r"set-up took (\d+) s", setup).group(1))
    report(f"Colab-like set-up cell: {len(planned)} packages installed or replaced in {took} s "
           f"({', '.join(f'{n} {v}' for n, (v, _) in sorted(planned.items()))})")
    again = output_of(sessions["second"], "PROJECT_URL")
    assert "everything was installed already" in again and "RESTART" not in again


def test_training_resumes_from_drive_after_the_runtime_died(sessions, colab):
    state = sessions["state_after_first"]
    assert state["epochs_done"] == 1 and state["settings"]["epochs"] == PARAMS["epochs"]
    texts = outputs(sessions["second"])
    assert any("resuming from the checkpoint of epoch 1 of 3" in t for t in texts)
    folder = colab["drive"] / "MyDrive" / "imdb-distilbert"
    predictor = folder / "models" / "distilbert-imdb"
    metrics = json.loads((predictor / "metrics.json").read_text())
    assert len(metrics["history"]["val_accuracy"]) == 3
    at_least("colab: test accuracy, resumed after the runtime died", metrics["accuracy"], 0.9)
    assert not (predictor / "checkpoints").exists()  # cleared once the predictor was saved
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["test.xlsx", "train.xlsx"]  # downloaded to Drive
    assert not [p.name for p in predictor.parent.iterdir() if p.name.startswith(".")]  # no staging left
    report(f"Colab-like run: resumed after epoch 1, test accuracy {metrics['accuracy']:.3f}, with "
           + ", ".join(f"{k} {v}" for k, v in metrics["versions"].items()
                       if k in ("python", "tensorflow", "tf_keras", "transformers", "numpy", "pandas")))


def test_a_later_session_predicts_the_same_from_drive(sessions):
    for fragment in ("reviews = [", "my_reviews = ["):  # the probability table, and the "label (p%)" lines
        first, later = output_of(sessions["second"], fragment), output_of(sessions["third"], fragment)
        assert first and first == later, (first, later)
    assert "['neg', 'pos']" in output_of(sessions["third"], "load_predictor(")
    check_tutorial_table(output_of(sessions["third"], "reviews = ["), "colab")
    assert "imdb-distilbert/models/distilbert-imdb" in output_of(sessions["third"], "colab.keep_on_drive(")


def test_web_page_shows_through_colabs_port_proxy_and_stops(sessions, colab):
    """Session 2's web page cells: the server's port shown through google.colab.output, the server answering
    what the page asks (/health, /predict) while it runs, and its port free after the stop cell."""
    nb = sessions["second"]
    started = output_of(nb, "serve_inline.start(")
    port = int(re.search(r"serving on port (\d+) \(ktrain backend, classes neg, pos\)", started).group(1))
    calls = [json.loads(line) for line in colab["shown"].read_text().splitlines()]
    assert [(c["function"], c["port"], c["path"]) for c in calls] == [("serve_kernel_port_as_iframe", port, "/"),
                                                                     ("serve_kernel_port_as_window", port, "/")]
    assert f"http://localhost:{port}/" in "".join(o["data"]["text/html"]
                                                  for c in nb.cells if "serve_inline.start(" in c.source
                                                  for o in c.outputs if "text/html" in o.get("data", {}))
    asked = output_of(nb, 'print("health"')
    health = json.loads(re.search(r"^health (.*)$", asked, re.MULTILINE).group(1))
    assert health["status"] == "ok" and health["backend"] == "ktrain" and health["classes"] == ["neg", "pos"]
    answers = json.loads(re.search(r"^predict (.*)$", asked, re.MULTILINE).group(1))["predictions"]
    table = re.findall(r"\b(neg|pos)\s+(\d\.\d+)\s+(\d\.\d+)", output_of(nb, "reviews = ["))
    assert [a["label"] for a in answers] == [row[0] for row in table]  # the predictor's labels, through the page's API
    for answer, (_, neg, pos) in zip(answers, table, strict=True):
        assert abs(answer["prob_neg"] - float(neg)) < 1e-4 and abs(answer["prob_pos"] - float(pos)) < 1e-4
    assert f"stopped the server; port {port} is free" in output_of(nb, "page.stop()")
    assert_port_closed(port)


def test_hf_folder_cells_say_why_without_pytorch(sessions):
    """This Colab-like environment has no PyTorch (no CPU build for Python 3.13 is reachable here; Colab has one):
    the export cell says so in one sentence and the notebook goes on; the no-install cell looks for the folder on
    Drive, next to the predictor, and says it is not there. The export and that cell with PyTorch:
    tests/test_notebook.py, tests/test_hf_folder.py."""
    nb = sessions["second"]
    assert ("The Hugging Face folder was not written: writing the Hugging Face folder needs PyTorch (torch), which "
            "is not installed") in output_of(nb, ".notebook_export(")
    assert f"There is no Hugging Face folder at {DRIVE_FOLDER}/models/distilbert-imdb-hf" in output_of(nb, "top_k=None")


def test_setup_says_restart_only_when_a_loaded_package_changed(sessions, colab_env, tmp_path):
    """After the notebook: change one pure-Python package, once imported and once not."""
    python = colab_env[0]
    for module, requirement, restart in (("whoosh", "Whoosh==2.7.3", True), ("syntok", "syntok==1.4.3", False)):
        (tmp_path / "req.txt").write_text(requirement + "\n")
        imported = f"import {module}; " if restart else ""  # a package this session has loaded, or not
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); {imported}"
                "from imdb_distilbert import colab; colab.setup(sys.argv[1])")
        out = subprocess.run([python, "-c", code, str(tmp_path / "req.txt")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert (f"RESTART NEEDED: this session had already imported {canonical(requirement.split('==')[0])}"
                in out.stdout) == restart, out.stdout


def test_what_setup_installs_has_wheels_or_is_pure_python_on_colab(planned, tmp_path):
    """Colab runs CPython 3.13 on manylinux x86_64: each package the set-up cell installs must have a
    wheel for it there, or be a pure-Python source package (it then builds a py3-none-any wheel)."""
    wheelhouse = tmp_path / "built"
    sdists = {n: v for n, (v, url) in planned.items() if not url.endswith(".whl")}
    if sdists:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheelhouse),
                        *[f"{n}=={v}" for n, v in sdists.items()]], check=True, capture_output=True)
        built = sorted(p.name for p in wheelhouse.glob("*.whl"))
        assert len(built) == len(sdists) and all(name.endswith("-none-any.whl") for name in built), built
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)] + ["manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.13", "--implementation", "cp", "-d", str(tmp_path / "download"),
               *[arg for p in platforms for arg in ("--platform", p)],
               *(["--find-links", str(wheelhouse)] if sdists else []),
               *[f"{n}=={v}" for n, (v, _) in planned.items()]]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    got = {canonical(p.name.split("-")[0]) for p in (tmp_path / "download").iterdir()}
    assert got == set(planned), set(planned) ^ got
