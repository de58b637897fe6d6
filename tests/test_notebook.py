"""The notebook: committed clean, executed headless on the tiny model, and in step with src/train.py."""

import ast
import html
import json
import os
import re
import socket

import nbformat
import numpy as np
import pytest
from conftest import ROOT, TINY, at_least, at_most
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "distilbert_imdb_sentiment.ipynb"
TUTORIAL_LABELS = ["neg", "pos", "pos"]  # the tutorial's three sentences ("bad" and "great" are learnt words)
TUTORIAL = ["this movie was really bad. acting was also bad. I will not watch again",
            "the movie was really great. I will see it again", "another great movie. must watch to everyone"]
# What the web page asks the server for, asked from the kernel while the server runs (a cell put before page.stop()).
BROWSER = f"""
import json, urllib.request
print("health", json.dumps(page.health()))
_ask = urllib.request.Request(page.url + "predict", data=json.dumps({{"texts": {TUTORIAL!r}}}).encode(),
                              headers={{"Content-Type": "application/json"}})
print("predict", urllib.request.urlopen(_ask, timeout=120).read().decode())
"""


def check_tutorial_table(table, where):
    """The probability table of the tutorial's three sentences: each label is its row's likelier class, and the
    right class (TUTORIAL_LABELS) is the likelier one (recorded: a tiny model's answer, checked over seeds)."""
    rows = re.findall(r"\b(neg|pos)\s+(\d\.\d+)\s+(\d\.\d+)", table)
    assert len(rows) == 3, table
    assert [label for label, *_ in rows] == [["neg", "pos"][float(b) > float(a)] for _, a, b in rows]
    right = [float(p_neg if label == "neg" else p_pos)
             for label, (_, p_neg, p_pos) in zip(TUTORIAL_LABELS, rows, strict=True)]
    at_least(f"{where}: probability of the tutorial sentences' labels (neg, pos, pos)", min(right), 0.5)


def read():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters(synthetic_splits, output):
    """The TINY flags of the train.py tests, as notebook parameters."""
    flags = dict(zip(TINY[::2], TINY[1::2], strict=True))
    return {"epochs": flags["--epochs"], "lr": flags["--lr"], "batch_size": flags["--batch-size"],
            "maxlen": flags["--maxlen"], "seed": flags["--seed"], "precision": flags["--precision"],
            "data_dir": str(synthetic_splits), "output": str(output)}


def execute(nb, params, keep=None):
    """Run `nb` in a fresh kernel from notebooks/, as Jupyter does, with `params` injected after the
    parameters cell (papermill's way). `keep(index, cell)` picks the cells to run."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    if keep:
        nb.cells = [c for i, c in enumerate(nb.cells) if i == at + 1 or keep(i, c)]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def text_of(cell):
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(synthetic_splits, tmp_path_factory):
    output = tmp_path_factory.mktemp("notebook") / "predictor"
    return execute(read(), parameters(synthetic_splits, output)), output


def test_committed_clean():
    for cell in read().cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_parameters_cell_mirrors_train_py_flags():
    from imdb_distilbert.config import RunConfig
    from imdb_distilbert.training import recipe

    cell = next(c for c in read().cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, {"IN_COLAB": False}, values)
    defaults = vars(recipe.parse_args([]))
    # Every field of RunConfig but --lr-find-only (a CLI mode), with the same default.
    for name in set(RunConfig.names()) - {"lr_find_only", "output", "checkpoint_dir"}:
        assert values[name] == defaults[name], name
    assert (ROOT / values["output"]) == defaults["output"]
    assert values["checkpoint_dir"] is None and defaults["checkpoint_dir"] == defaults["output"] / "checkpoints"
    assert values["keep_on_drive"] is False  # on only in Colab


def test_notebook_trains_saves_and_predicts(executed):
    nb, output = executed
    assert {"tf_model.h5", "tf_model.preproc", "metrics.json", "report.txt", "confusion_matrix.png"} <= \
        {p.name for p in output.iterdir()}
    outputs = [text_of(c) for c in nb.cells if c.cell_type == "code"]
    assert any("['neg', 'pos']" in text for text in outputs)  # get_classes()
    checked = text_of(next(c for c in nb.cells if "run.data_check.table()" in c.source))  # the data cell
    assert "near-exact duplicates" in checked and "test also in train" in checked
    table = next(text for text in outputs if "this movie was really bad" in text)
    check_tutorial_table(table, "notebook")
    mine = next(c for c in nb.cells if "my_reviews = [" in c.source)
    assert re.match(r"(neg|pos) \(\d+%\)", text_of(mine))
    checked = text_of(next(c for c in nb.cells if "selfcheck.check(" in c.source))  # the cell after loading
    assert checked.startswith("self-check: reproduced: the ktrain backend gives the stored answers for 8 reviews")


def test_explanation_cells_highlight_the_words(executed):
    """The cells at the end: the tutorial sentences and own reviews, then the worst mistakes, as HTML: what
    inference/explain.py gives for the saved predictor, its strongest word in the strongest colour."""
    from imdb_distilbert.inference import explain

    nb, output = executed
    shown = next(c for c in nb.cells if c.cell_type == "code" and "explain.show(" in c.source)
    page = shown.outputs[0]["data"]["text/html"]
    assert page.count("class='review'") == 4  # the three tutorial sentences and the one in my_reviews
    first, = explain.explain(output, ["this movie was really bad. acting was also bad. I will not watch again"])
    # The first review's words as the page shows them: (colour, strength, score, word), in text order.
    spans = re.findall(r"background: rgba\(([\d, ]+), ([\d.]+)\)' data-score='([^']+)' title='[^']*'>([^<]*)<",
                       page.split("class='review'")[1])
    words = sorted(first["words"], key=lambda w: w["start"])
    assert [html.unescape(word) for *_, word in spans] == [first["text"][w["start"]:w["end"]] for w in words]
    scores = np.array([float(score) for _, _, score, _ in spans])
    label = first["label"]
    expected = np.array([w["scores"][label] for w in words])
    largest = np.abs(expected).max()
    assert np.abs(scores - expected).max() <= 1e-3 * largest  # explained in the notebook's batch or alone: the same
    assert all((colour == "0, 150, 0") == (float(score) > 0) for colour, _, score, _ in spans)
    strongest = [abs(float(score)) for _, alpha, score, _ in spans if alpha == "0.60"]
    assert strongest and min(strongest) >= (1 - 1e-3) * largest  # the strongest colour is the top word's (ties aside)
    worst = next(c for c in nb.cells if "explain.show_top_losses(" in c.source)
    page = worst.outputs[0]["data"]["text/html"]
    mistakes = min(5, len(open(output / "top_losses.csv").read().splitlines()) - 1)
    assert page.count("class='review'") == mistakes and (mistakes or "every test review right" in page)


def test_prediction_cells_work_after_a_restart(executed, synthetic_splits):
    """A new kernel that runs only the set-up, parameters and prediction cells."""
    _, output = executed
    cells = read().cells
    start = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## ")
                 and "Classify new reviews" in c.source)  # the section's heading, not the introduction's mention of it
    setup = next(i for i, c in enumerate(cells) if "PROJECT_URL" in c.source and c.cell_type == "code")
    drive = next(i for i, c in enumerate(cells) if "colab.keep_on_drive(" in c.source)

    def keep(i, cell):
        return cell.cell_type == "code" and (i in (setup, drive) or "parameters" in cell.metadata.get("tags", [])
                                             or i > start)

    nb = execute(read(), parameters(synthetic_splits, output), keep)
    table = next(text_of(c) for c in nb.cells if "this movie was really bad" in c.source)
    first = next(text_of(c) for c in executed[0].cells if "this movie was really bad" in c.source)
    assert table == first  # the same predictor, the same numbers


def test_notebook_and_train_py_write_the_same_things(executed, trained):
    """Same parameters, seed and tiny model: same files, class names and metrics keys."""
    _, notebook_output = executed
    script_output = trained[0]
    assert sorted(p.name for p in notebook_output.iterdir()) == sorted(p.name for p in script_output.iterdir())
    a, b = (json.loads((o / "metrics.json").read_text()) for o in (notebook_output, script_output))
    assert a["classes"] == b["classes"] == ["neg", "pos"]
    assert set(a) == set(b) and set(a["args"]) == set(b["args"])
    at_most("notebook: |test accuracy - train.py's|", abs(a["accuracy"] - b["accuracy"]), 0.02)
    assert os.path.samefile(a["args"]["train"], b["args"]["train"])


def stdout_of(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def page_port(cell):
    """The port of the server the web page cell started, from the frame it displayed."""
    html = "".join(o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {}))
    return int(re.search(r'src="http://(?:127\.0\.0\.1|localhost):(\d+)/"', html).group(1))


def assert_port_closed(port):
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_notebook_writes_the_hf_folder_and_classifies_with_it(executed):
    """After saving, the Hugging Face folder goes next to the predictor; the no-install cell reads it and gives
    the TensorFlow predictor's answers; the web page cells start, show (an IFrame) and stop the server."""
    from imdb_distilbert.inference import backends

    nb, output = executed
    folder = output.parent / f"{output.name}-hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in folder.iterdir()}
    exported = next(c for c in nb.cells if "hf_export.notebook_export(" in c.source)
    assert "largest probability difference" in stdout_of(exported) and f"wrote {folder}" in stdout_of(exported)
    later = next(c for c in nb.cells if "no-install" in c.metadata.get("tags", []))
    lines = [line for line in stdout_of(later).splitlines() if line.startswith(("neg ", "pos "))]
    texts = [line.split("} ", 1)[1] for line in lines]
    assert len(texts) == 2
    for line, want in zip(lines, backends.KtrainBackend(output).predict_proba(texts), strict=True):
        scores = ast.literal_eval(line.split(" ", 1)[1].split("} ", 1)[0] + "}")
        assert line.split()[0] == ["neg", "pos"][want.argmax()]
        assert abs(scores["neg"] - want[0]) <= 1e-4 and abs(scores["pos"] - want[1]) <= 1e-4
    start = next(c for c in nb.cells if "serve_inline.start(" in c.source)
    port = page_port(start)
    assert f"serving on port {port} (ktrain backend" in stdout_of(start)
    assert f"stopped the server; port {port} is free" in stdout_of(next(c for c in nb.cells
                                                                        if c.source.strip() == "page.stop()"))
    assert_port_closed(port)


def test_web_page_cells_in_jupyter(exported, synthetic_splits):
    """A kernel runs the set-up and parameters cells, then the web page's on an exported predictor: the page is
    an IFrame on the server's port, the server answers what the page asks while it runs (BROWSER, a cell put
    before the stop), and the stop cell frees the port."""
    from imdb_distilbert.inference import backends

    folder = exported[0]
    nb = read()
    stop_at = next(i for i, c in enumerate(nb.cells) if c.source.strip() == "page.stop()")
    nb.cells.insert(stop_at, nbformat.v4.new_code_cell(BROWSER))
    wanted = ("PROJECT_URL", "colab.keep_on_drive(", "serve_inline.start(", "page.stop()", 'print("health"')
    nb = execute(nb, parameters(synthetic_splits, folder), lambda i, c: c.cell_type == "code" and (
        "parameters" in c.metadata.get("tags", []) or any(w in c.source for w in wanted)))
    start = next(c for c in nb.cells if "serve_inline.start(" in c.source)
    port = page_port(start)
    assert f"serving on port {port} (onnx-int8 backend, classes neg, pos)" in stdout_of(start)
    asked = stdout_of(next(c for c in nb.cells if 'print("health"' in c.source))
    assert json.loads(re.search(r"^health (.*)$", asked, re.MULTILINE).group(1))["status"] == "ok"
    answers = json.loads(re.search(r"^predict (.*)$", asked, re.MULTILINE).group(1))["predictions"]
    want = backends.OnnxBackend(folder, "onnx-int8").predict_proba(TUTORIAL)  # what predict.py gives, one batch
    assert [a["label"] for a in answers] == [["neg", "pos"][i] for i in want.argmax(1)]
    assert max(abs(a["prob_neg"] - w[0]) for a, w in zip(answers, want, strict=True)) <= 1e-4
    assert f"stopped the server; port {port} is free" in stdout_of(next(c for c in nb.cells
                                                                        if c.source.strip() == "page.stop()"))
    assert_port_closed(port)


@pytest.mark.parametrize("kind", ["three", "ratings"])
def test_notebook_on_own_data(kind, tmp_path):
    """The parameters cell pointed at a user's own spreadsheets (conftest.OWN_DATA: a CSV with three classes; an
    .xlsx of ratings 2-10 as numbers, five classes): the notebook trains, reports every class, saves, predicts and
    explains, as train.py does on that data."""
    import synthetic
    from conftest import OWN_DATA

    spec = OWN_DATA[kind]
    classes = {"three": ["neg", "neutral", "pos"], "ratings": ["2", "4", "6", "8", "10"]}[kind]
    splits = synthetic.write_class_splits(tmp_path / "splits", 800, 250, spec["words"], suffix=spec["suffix"],
                                          numbers=spec["numbers"], text=spec["text"], label=spec["label"])
    output = tmp_path / "predictor"
    params = {**parameters(splits, output), "data_dir": None, "train": str(splits / f"train{spec['suffix']}"),
              "test": str(splits / f"test{spec['suffix']}"), "text_column": spec["text"],
              "label_column": spec["label"]}
    cells = read().cells
    stop = next(i for i, c in enumerate(cells) if "explain.show_top_losses(" in c.source)

    def keep(i, cell):  # all but the Hugging Face folder (tests/test_own_data.py) and the server's page
        return cell.cell_type == "code" and i < stop and not any(w in cell.source for w in ("hf_export", "hf_folder"))

    nb = execute(read(), params, keep)
    outputs = [text_of(c) for c in nb.cells if c.cell_type == "code"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["classes"] == classes and metrics["args"]["text_column"] == spec["text"]
    at_least(f"notebook on own data: test accuracy ({kind})", metrics["accuracy"], 0.9)
    assert any("weighted avg" in text and classes[1] in text for text in outputs)  # the report
    assert any(repr(classes) in text for text in outputs)  # get_classes()
    table = next(text_of(c) for c in nb.cells if "this movie was really bad" in c.source)
    assert all(f"p({c})" in table for c in classes)
    shown = next(c for c in nb.cells if c.cell_type == "code" and "explain.show(" in c.source)
    assert shown.outputs[0]["data"]["text/html"].count("class='review'") == 4
