"""src/export_hf.py: the Hugging Face folder and its model card, loaded with the tools people already have.

- Our pinned set, in this Python (transformers 4.54.1, torch 2.13.0): pipeline("text-classification",
  model=folder, truncation=True) gives the TensorFlow predictor's labels, and its probabilities within 1e-4,
  on the 100 real reviews of data/sample/test.xlsx (nearly all longer than the tiny model's maxlen of 32,
  some longer than 512 word pieces) and on synthetic ones.
- Colab's own set, untouched (tests/colab_env.py): Colab's transformers 5.15.0, tokenizers, huggingface_hub
  and safetensors with everything they need at Colab's versions, and a CPU torch; no ktrain, TensorFlow or
  src/. A later Colab session's kernel there (the fake google.colab, the folder on a fake Drive) runs the
  notebook's no-install cell, then the same check on the same reviews.
- The model card parses with huggingface_hub's ModelCard, and its model-index holds metrics.json's results.
- The export refuses, writing nothing, when the folder's answers differ; head+tail is said and done as
  documented; user errors are one sentence.

Every comparison is with the TensorFlow predictor on the same model, so it holds for any seed and CPU.
"""

import ast
import json
import os
import shutil

import nbformat
import numpy as np
import pandas as pd
import pytest
import synthetic
from colab_env import COLAB, HF_SET, build_colab_own, colab_pins, cpu_torch_wheel, fake_colab_kernel
from conftest import ROOT, assert_user_error, report, run_train, unavailable
from nbclient import NotebookClient
from test_export import blocking
from test_notebook import NOTEBOOK

from imdb_distilbert.inference import backends

SAMPLE = ROOT / "data" / "sample" / "test.xlsx"
MOUNT = "/content/drive"  # where Colab mounts Drive (tests/fake_colab links it to a folder)
ON_DRIVE = "MyDrive/imdb-distilbert/models/distilbert-imdb-hf"  # where the notebook's export cell writes it in Colab
TOLERANCE = 1e-4


def run_export(*args, **kwargs):
    return run_train(*args, script=ROOT / "src" / "export_hf.py", **kwargs)


@pytest.fixture(scope="module")
def hf_export(trained, tmp_path_factory):
    """The trained predictor exported by `python src/export_hf.py`: (folder, CompletedProcess)."""
    folder = tmp_path_factory.mktemp("hf") / "distilbert-imdb-hf"
    result = run_export("--model", trained[0], "--output", folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, result


@pytest.fixture(scope="module")
def texts():
    """Real reviews (most far longer than maxlen) and synthetic ones the tiny model knows."""
    return list(pd.read_excel(SAMPLE)["Reviews"].dropna()) + list(synthetic.reviews(20, seed=11)["Reviews"])


@pytest.fixture(scope="module")
def tensorflow(trained):
    """The predictor, long reviews cut as training did: what a pipeline can read (not the run's windows)."""
    return backends.KtrainBackend(trained[0], long_reviews="cut")


@pytest.fixture(scope="module")
def expected(tensorflow, texts):
    return tensorflow.predict_proba(texts)


def proba(rows, classes=("neg", "pos")):
    """pipeline(..., top_k=None)'s answers as an (n, classes) array."""
    return np.array([[{d["label"]: d["score"] for d in row}[c] for c in classes] for row in rows])


def assert_same_answers(got, expected):
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(got - expected).max() <= TOLERANCE, np.abs(got - expected).max()


def test_folder_holds_the_standard_files(hf_export, trained):
    folder, result = hf_export
    assert sorted(p.name for p in folder.iterdir()) == [".imdb-distilbert",  # the marker: this project wrote it
                                                        "README.md", "config.json", "model.safetensors",
                                                        "special_tokens_map.json", "tokenizer.json",
                                                        "tokenizer_config.json", "vocab.txt"]
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert config["architectures"] == ["DistilBertForSequenceClassification"]
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    maxlen = json.loads((trained[0] / "metrics.json").read_text())["args"]["maxlen"]
    assert tokenizer["model_max_length"] == maxlen and tokenizer["truncation_side"] == "right"  # the run's; head
    assert json.loads((folder / "tokenizer.json").read_text())["truncation"] is None  # no second, contradicting cut
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private one
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in folder.iterdir())
    assert "largest probability difference" in result.stdout and f"wrote {folder}" in result.stdout


def test_model_card_parses_with_huggingface_hub(hf_export, trained):
    from huggingface_hub import ModelCard

    card = ModelCard.load(hf_export[0] / "README.md")
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    data = card.data
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert data.base_model == "distilbert/distilbert-base-uncased" and data.datasets == ["stanfordnlp/imdb"]
    assert {"accuracy", "f1", "roc_auc"} <= set(data.metrics)
    results = {r.metric_type: r for r in data.eval_results}
    for key in ("accuracy", "f1", "precision", "recall", "roc_auc"):
        assert results[key].metric_value == pytest.approx(metrics[key], abs=1e-4), key
        assert results[key].dataset_type == "stanfordnlp/imdb" and results[key].dataset_split == "test"
        assert results[key].task_type == "text-classification"
    text = card.text
    # The tiny test model is neither DistilBERT's shape nor the full recipe, and the card says both.
    args = metrics["args"]
    assert ("Not the full recipe" in text and "not DistilBERT's shape" in text
            and f"maxlen {args['maxlen']} (the recipe: 400)" in text)
    assert f"| maxlen (word pieces) | {args['maxlen']} |" in text and f"| seed | {args['seed']} |" in text
    for name, version in metrics["versions"].items():  # training's package versions, and the export's
        assert f"{name} {version}" in text
    assert "torch 2.13.0" in text and "truncation=True" in text and "## Intended use and limitations" in text
    # The run read long reviews in windows, which a pipeline cannot: the card says so, with both accuracies.
    readings = metrics["long_reviews"]["readings"]
    assert args["long_reviews"] == "windows" and "reads a longer review whole instead" in text
    assert f"{readings['head']['accuracy']:.2%} accuracy that way against {readings['windows']['accuracy']:.2%}" in text
    assert str(trained[0]) not in text and str(ROOT) not in text  # no local paths in a card meant for sharing


def test_our_pinned_set_loads_it_with_one_pipeline_call(hf_export, texts, expected, tensorflow):
    import transformers
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(hf_export[0]), truncation=True, top_k=None)
    lengths = [len(ids) for ids in tensorflow.predictor.preproc.get_tokenizer()(texts)["input_ids"]]
    maxlen = tensorflow.predictor.preproc.maxlen
    assert sum(n > maxlen for n in lengths) >= 80 and max(lengths) > 512  # cut by the tokenizer, as in training
    assert_same_answers(proba(classify(texts, batch_size=8)), expected)
    report(f"Hugging Face folder, pinned set: transformers {transformers.__version__}, "
           f"torch {__import__('torch').__version__}: TensorFlow's labels and probabilities (1e-4) "
           f"on {len(texts)} reviews")


def test_export_refuses_and_keeps_the_earlier_folder_when_answers_differ(trained, hf_export, tmp_path, monkeypatch,
                                                                          capsys):
    from imdb_distilbert.errors import UserError
    from imdb_distilbert.export import hf_folder, onnx_export

    earlier = tmp_path / "distilbert-imdb-hf"
    shutil.copytree(hf_export[0], earlier)
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    convert = onnx_export.to_pytorch

    def changed_weights(tf_model):  # a conversion that went wrong: the classifier's rows swapped (label order mixed up)
        import torch

        model = convert(tf_model)
        with torch.no_grad():  # (a nudge to the bias can hide in a saturated model's probabilities, on some seeds)
            for tensor in (model.classifier.weight, model.classifier.bias):
                tensor.copy_(tensor.flip(0))
        return model

    monkeypatch.setattr(onnx_export, "to_pytorch", changed_weights)
    with pytest.raises(UserError, match=r"differ from the TensorFlow predictor's by up to .* so nothing was written"):
        hf_folder.export(trained[0], earlier)
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distilbert-imdb-hf"]  # no staging left


def test_head_tail_is_said_and_the_tokenizer_keeps_the_tail(trained, tmp_path, texts, capsys):
    """A model trained with --truncation head+tail (the trained predictor, its metrics.json saying so)."""
    from huggingface_hub import ModelCard
    from transformers import pipeline

    from imdb_distilbert.data.truncation import like_saved_run
    from imdb_distilbert.export import hf_folder

    predictor = tmp_path / "predictor"
    shutil.copytree(trained[0], predictor)
    metrics = json.loads((predictor / "metrics.json").read_text())
    metrics["args"]["truncation"] = "head+tail"
    (predictor / "metrics.json").write_text(json.dumps(metrics))
    folder = hf_folder.export(predictor)
    assert folder == tmp_path / "predictor-hf"  # next to the predictor by default
    printed = capsys.readouterr().out
    assert "note: this model was trained with --truncation head+tail" in printed and "keeps the tail" in printed
    assert json.loads((folder / "tokenizer_config.json").read_text())["truncation_side"] == "left"
    card = ModelCard.load(folder / "README.md").text
    assert "trained with `--truncation head+tail`" in card and "cannot cut a review that way" in card
    # Cut as the run cut them, the folder gives the predictor's answers; the export checked that, and so do we.
    tensorflow = backends.KtrainBackend(predictor, long_reviews="cut")
    cut = like_saved_run(texts, predictor, tensorflow.predictor.preproc.get_tokenizer())
    classify = pipeline("text-classification", model=str(folder), truncation=True, top_k=None)
    assert_same_answers(proba(classify(cut, batch_size=8)), tensorflow.predict_proba(texts))


def test_user_errors_are_one_sentence_and_write_nothing(trained, tmp_path):
    assert_user_error(run_export("--model", trained[0], "--output", trained[0]), "is the predictor folder")
    taken = tmp_path / "taken"
    taken.mkdir()
    for name in ("notes.txt", "config.json", "model.safetensors", "README.md"):  # looks like an export; is not ours
        (taken / name).write_text("mine")
    assert_user_error(run_export("--model", trained[0], "--output", taken), "holds files this project did not write")
    assert sorted(p.name for p in taken.iterdir()) == ["README.md", "config.json", "model.safetensors", "notes.txt"]
    no_torch = blocking(tmp_path, "torch")
    result = run_export("--model", trained[0], "--output", tmp_path / "hf", env=no_torch)
    assert_user_error(result, "needs PyTorch", "pip install -r requirements-export.txt")
    assert_user_error(run_export("--model", tmp_path / "missing"), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "taken"]


# -- A later Colab session with nothing installed: Colab's own packages, the folder on Drive -------------------------

CHECK = """
import importlib.util, json, platform, sys
import huggingface_hub, safetensors, tokenizers, torch, transformers
found = [name for name in ("tensorflow", "tf_keras", "keras", "ktrain", "compat", "export_hf", "backends")
         if importlib.util.find_spec(name)]
rows = classify(json.load(open({texts!r})), batch_size=8)
print(json.dumps({{"importable": found, "python": platform.python_version(),
                  "versions": {{m.__name__: m.__version__ \
for m in (transformers, tokenizers, huggingface_hub, safetensors, torch)}},
                  "proba": [{{d["label"]: d["score"] for d in row}} for row in rows]}}))
"""


@pytest.fixture(scope="module")
def later_session(hf_export, texts, tmp_path_factory):
    """The notebook's no-install cell, then CHECK, in a fresh kernel of Colab's own set with a fake google.colab
    whose Drive holds the exported folder where the notebook writes it. Returns (executed cells, environment)."""
    if not COLAB.is_dir():
        unavailable(f"{COLAB} (Google's Colab package list) is not here")
    base = tmp_path_factory.mktemp("later-session")
    wheel = cpu_torch_wheel(base / "wheels")
    if wheel is None:
        unavailable("no CPU build of requirements-export.txt's torch on this machine to build Colab's set with")
    if os.path.lexists(MOUNT) and not os.path.islink(MOUNT):
        pytest.fail(f"{MOUNT} exists and is not the fake Drive's link: move it away to run this test")
    try:
        os.makedirs(os.path.dirname(MOUNT), exist_ok=True)
    except PermissionError:
        unavailable(f"cannot create {os.path.dirname(MOUNT)} (the fake Drive's mount point) without root")
    python, versions = build_colab_own(base / "venv", wheel)
    drive, content, empty_cache = base / "drive", base / "content", base / "hf"
    shutil.copytree(hf_export[0], drive / ON_DRIVE)
    content.mkdir()
    empty_cache.mkdir()  # no Hugging Face cache: the folder must be enough
    (base / "texts.json").write_text(json.dumps(texts))
    jupyter = fake_colab_kernel(base, "colab-own", python, {"FAKE_COLAB_DRIVE": str(drive), "HF_HOME": str(empty_cache),
                                                           "HF_HUB_OFFLINE": "1"})
    cell = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "no-install" in c.metadata.get("tags", []))
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(CHECK.format(texts=str(base / "texts.json")))])
    if os.path.islink(MOUNT):
        os.unlink(MOUNT)  # a new runtime: Drive is not mounted yet
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(jupyter)
    try:
        NotebookClient(nb, timeout=600, kernel_name="colab-own",
                       resources={"metadata": {"path": str(content)}}).execute()
    finally:
        os.environ.pop("JUPYTER_PATH") if old is None else os.environ.update(JUPYTER_PATH=old)
        if os.path.islink(MOUNT):
            os.unlink(MOUNT)
    return nb.cells, versions


def test_a_later_colab_session_classifies_with_nothing_installed(later_session, tensorflow):
    """The notebook's no-install cell, alone in a new session: it mounts Drive and reads the folder there."""
    printed = "".join(o.get("text", "") for o in later_session[0][0].outputs if o.get("name") == "stdout")
    assert f"Mounted at {MOUNT}" in printed
    lines = [line for line in printed.splitlines() if line.startswith(("neg ", "pos "))]
    texts = [line.split("} ", 1)[1] for line in lines]
    assert len(lines) == 2
    for line, want in zip(lines, tensorflow.predict_proba(texts), strict=True):
        label, rest = line.split(" ", 1)
        scores = ast.literal_eval(rest.split("} ", 1)[0] + "}")  # {'pos': 0.98, 'neg': 0.02}, as the cell prints it
        assert label == ["neg", "pos"][want.argmax()]
        assert abs(scores["neg"] - want[0]) <= TOLERANCE and abs(scores["pos"] - want[1]) <= TOLERANCE


def test_colabs_own_set_gives_tensorflows_answers(later_session, expected):
    cells, versions = later_session
    found = json.loads("".join(o.get("text", "") for o in cells[1].outputs if o.get("name") == "stdout"))
    assert found["importable"] == []  # no TensorFlow, Keras, ktrain or this project's code
    colab = colab_pins()
    for name in HF_SET:
        assert versions[name] == colab[name][1], name
    assert found["versions"]["transformers"] == colab["transformers"][1]
    for name in ("tensorflow", "tf-keras", "ktrain"):
        assert name not in versions
    assert_same_answers(np.array([[row["neg"], row["pos"]] for row in found["proba"]]), expected)
    report(f"Hugging Face folder, Colab's own set: Python {found['python']}, "
           + ", ".join(f"{k} {v}" for k, v in found["versions"].items())
           + f": TensorFlow's labels and probabilities (1e-4) on {len(expected)} reviews, from a fake Drive")
