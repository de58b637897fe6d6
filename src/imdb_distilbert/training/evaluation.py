"""Score a trained model on the test split: metrics, a text report, the worst mistakes.

`learner` is the ktrain Learner that trained the model and `preproc` ktrain's preprocessor for it (hinted `Any`).
"""

from __future__ import annotations

import dataclasses
import platform
import resource
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from imdb_distilbert import config, packages
from imdb_distilbert.data import reading, truncation, windows
from imdb_distilbert.data.dataset import LABEL, TEXT
from imdb_distilbert.files import spreadsheet_safe
from imdb_distilbert.training import calibration, plots

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def evaluate(
    learner: Any, preproc: Any, test_df: pd.DataFrame, history: dict[str, list[float]], how: windows.Reading,
    top_n: int = 20, padding: str = "grouped", temperature: float = 1.0,
) -> tuple[dict[str, Any], dict[str, str | bytes]]:
    """Score the trained model on the test split. Returns (metrics, files to save beside it).

    The files: report.txt, confusion_matrix.png, roc_curve.png, training_curves.png (from
    `history`, as learning.fit returns it), top_losses.csv (the `top_n` worst mistakes) and
    top_losses.html (those reviews with the words that decided them highlighted, inference/explain.py).
    Reviews longer than maxlen are read as `how` says (the run's --long-reviews and --truncation: windows, or cut),
    and scored in batches of similar length unless `padding` is "fixed" (see predict). Whichever it is, the report
    and metrics.json["long_reviews"] compare head, tail, head+tail and windows (compare_readings).
    `temperature`: what the run folded into the model (training/calibration.py); the probabilities before it are
    derived from those after, not scored again.
    Also written: reliability.png, and the calibration and accuracy-against-coverage tables in the report.
    """
    import ktrain

    from imdb_distilbert.inference import explain

    classes = preproc.get_classes()
    truth = [classes.index(label) for label in test_df[LABEL]]
    readings, compared = compare_readings(learner, preproc, list(test_df[TEXT]), truth, how, padding)
    proba = readings["windows" if how.windows else how.cut]
    metrics = {**score(test_df[LABEL], proba, classes), "history": history, "long_reviews": compared}
    before = calibration.with_temperature(proba, 1 / temperature)  # the logits times T: the model before folding
    metrics["calibration"] = {
        "temperature": temperature, "bins": calibration.BINS,
        "ece_before": calibration.ece(before, truth), "ece_after": calibration.ece(proba, truth),
        "log_loss_before": calibration.log_loss(before, truth), "log_loss_after": calibration.log_loss(proba, truth),
        "reliability": calibration.reliability(proba, truth)}
    metrics["coverage"] = calibration.coverage(proba, truth)
    worst = top_losses(test_df, proba, classes, top_n)
    files = {
        "report.txt": report_text(metrics),
        "reliability.png": plots.reliability(before, proba, truth, temperature),
        "confusion_matrix.png": plots.confusion_matrix(metrics),
        "roc_curve.png": plots.roc_curve(test_df[LABEL], proba, classes),
        "training_curves.png": plots.training_curves(history),
        "top_losses.csv": top_losses_csv(worst),
        "top_losses.html": explain.top_losses_page(ktrain.get_predictor(learner.model, preproc), worst, how.cut,
                                                   mistakes=config.mistakes(metrics)),
    }
    return metrics, files


def compare_readings(learner: Any, preproc: Any, texts: Sequence[str], truth: Sequence[int], how: windows.Reading,
                     padding: str = "grouped") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The test reviews' probabilities read each way a long review can be read, and how each scores.

    One scoring of every review's windows gives three: the first window is what head keeps, the last what tail
    keeps, and their combination is windows; head+tail scores the long reviews once more. Returns ({"head": proba,
    "tail", "head+tail", "windows"}, the facts metrics.json keeps: accuracy and log loss of each on all reviews and
    on the long ones, which `how` used, how many reviews were long, windows scored, reviews the cap cut).
    """
    scan = dataclasses.replace(how, long_reviews="windows")
    found = windows.of_texts(texts, preproc.get_tokenizer(), scan)
    long = found.counts() > 1
    print(f"{int(long.sum())} of {len(texts)} test reviews are longer than maxlen {how.maxlen}: scoring their "
          f"{int(found.counts()[long].sum())} windows and the {int((~long).sum())} other reviews (they give head, "
          "tail and windows)...")
    pieces = predict(learner, preproc, found.pieces, padding)
    readings = {"head": found.first(pieces), "tail": found.last(pieces), "windows": found.combine(pieces)}
    readings["head+tail"] = readings["head"].copy()
    if long.any():
        print(f"and the {int(long.sum())} long reviews cut head+tail...")
        cut = truncation.truncate([t for t, k in zip(texts, long, strict=True) if k], preproc.get_tokenizer(),
                                  how.maxlen, "head+tail")
        readings["head+tail"][long] = predict(learner, preproc, cut, padding)
    truth = np.asarray(truth)
    table = {}
    for name in (*truncation.MODES, "windows"):
        p = readings[name]
        table[name] = {"accuracy": float((p.argmax(1) == truth).mean()), "log_loss": calibration.log_loss(p, truth),
                       "long_accuracy": float((p[long].argmax(1) == truth[long]).mean()) if long.any() else None,
                       "long_log_loss": calibration.log_loss(p[long], truth[long]) if long.any() else None}
    if found.capped:
        print(windows.cap_note(len(found.capped), scan))
    return readings, {"used": "windows" if how.windows else how.cut, **how.record(), "n_long": int(long.sum()),
                      "windows_scored": len(found.pieces), "capped": len(found.capped), "readings": table}


def predict(learner: Any, preproc: Any, texts: Sequence[str], padding: str = "grouped") -> np.ndarray:
    """Class probabilities (n, 2) for `texts`, in their order: what the predictor that will be saved gives.

    "grouped" scores batches of reviews of similar length, each padded only to its longest (faster, the same
    numbers to 1e-5: learning.predict_proba); "fixed" calls the predictor itself, which pads every review to maxlen.
    """
    import ktrain

    from imdb_distilbert.training import learning

    if padding == "grouped":
        return learning.predict_proba(learner.model, preproc, texts)
    return ktrain.get_predictor(learner.model, preproc).predict(list(texts), return_proba=True, verbose=1)


def score(y_true: ArrayLike, proba: ArrayLike, class_names: Sequence[str]) -> dict[str, Any]:
    """Everything we report about predictions `proba` (n, k) against true labels (class names)."""
    classes = list(class_names)
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=float)
    y_pred = np.asarray(classes)[proba.argmax(axis=1)]
    report = skm.classification_report(y_true, y_pred, labels=classes, output_dict=True, zero_division=0)
    weighted = report["weighted avg"]
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": report["macro avg"]["f1-score"],  # macro: the mean of the per-class F1s
        "precision": report["macro avg"]["precision"],
        "recall": report["macro avg"]["recall"],
        "roc_auc": roc_auc(y_true, proba, classes),
        "loss": float(skm.log_loss(y_true, proba / proba.sum(axis=1, keepdims=True), labels=classes)),  # cross-entropy
        "per_class": {c: {"precision": report[c]["precision"], "recall": report[c]["recall"],
                          "f1": report[c]["f1-score"], "support": int(report[c]["support"])} for c in classes},
        # rows: true class, columns: predicted class, both in `classes` order
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "n_test": len(y_true),
        "classes": classes,
        **({"weighted": {"precision": weighted["precision"], "recall": weighted["recall"], "f1": weighted["f1-score"]}}
           if len(classes) > 2 else {}),  # the mean over classes weighted by their reviews (two classes: as before)
    }


def roc_auc(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> float | None:
    """Two classes: the ROC-AUC of the second (pos) against the first. More: the mean over the classes of each
    one's ROC-AUC against all the others (one-vs-rest, macro). None where a class is missing from the truth."""
    if set(y_true) != set(classes):
        return None
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true == classes[1], proba[:, 1]))
    # scikit-learn's multi_class="ovr" computes the same, but only for classes in sorted order (not 2, 4, ..., 10)
    return float(np.mean([skm.roc_auc_score(y_true == c, proba[:, i]) for i, c in enumerate(classes)]))


def report_text(metrics: dict[str, Any]) -> str:
    """The classification report as text, for report.txt."""
    classes = metrics["classes"]
    w = max(12, *(len(str(c)) + 1 for c in classes))  # the first column: the class names
    lines = [f"{'':>{w}}{'precision':>11}{'recall':>9}{'f1':>8}{'support':>9}"]
    for c in classes:
        m = metrics["per_class"][c]
        lines.append(f"{c:>{w}}{m['precision']:>11.4f}{m['recall']:>9.4f}{m['f1']:>8.4f}{m['support']:>9}")
    lines.append(f"{'macro avg':>{w}}{metrics['precision']:>11.4f}{metrics['recall']:>9.4f}"
                 f"{metrics['f1']:>8.4f}{metrics['n_test']:>9}")
    if "weighted" in metrics:
        m = metrics["weighted"]
        lines.append(f"{'weighted avg':>{w}}{m['precision']:>11.4f}{m['recall']:>9.4f}{m['f1']:>8.4f}"
                     f"{metrics['n_test']:>9}")
    auc = "n/a" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
    auc_kind = " (one-vs-rest, macro)" if len(classes) > 2 and metrics["roc_auc"] is not None else ""
    cell = max(9, *(len(str(c)) + 1 for c in classes), len(str(metrics["n_test"])) + 1)
    lines += ["", f"accuracy {metrics['accuracy']:.4f}   ROC-AUC {auc}{auc_kind}   loss {metrics['loss']:.4f}   "
              f"on {metrics['n_test']} test reviews", "",
              "confusion matrix (rows: true, columns: predicted)",
              f"{'':>{w}}" + "".join(f"{c:>{cell}}" for c in classes)]
    for c, row in zip(classes, metrics["confusion_matrix"], strict=True):  # one row per class
        lines.append(f"{c:>{w}}" + "".join(f"{n:>{cell}}" for n in row))
    if "long_reviews" in metrics:
        lines += ["", *long_reviews_text(metrics["long_reviews"])]
    if "calibration" in metrics:
        lines += ["", *calibration_text(metrics["calibration"]), "", *coverage_text(metrics["coverage"])]
    return "\n".join(lines) + "\n"


def long_reviews_text(found: dict[str, Any]) -> list[str]:
    """The report's comparison of the ways to read a review longer than maxlen (compare_readings)."""
    lines = [f"reviews longer than maxlen: {found['n_long']}; read as {found['used']} above (--long-reviews, "
             f"--truncation). Each way, on all test reviews and on the long ones:",
             f"{'':>11}{'accuracy':>10}{'log loss':>10}{'long: acc':>11}{'log loss':>10}"]
    for name, r in found["readings"].items():
        long = (f"{r['long_accuracy']:>11.4f}{r['long_log_loss']:>10.4f}" if r["long_accuracy"] is not None
                else f"{'-':>11}{'-':>10}")
        lines.append(f"{name:>11}{r['accuracy']:>10.4f}{r['log_loss']:>10.4f}{long}")
    if found["capped"]:
        lines.append(f"({found['capped']} reviews were longer than --max-windows {found['max_windows']} windows: "
                     "spread windows were read)")
    return lines


def calibration_text(found: dict[str, Any]) -> list[str]:
    """The calibration lines of the report: ECE and log loss on the test split, before and after the temperature."""
    t = found["temperature"]
    head = (f"calibration: temperature {t:.3f} fitted on held-out reviews and folded into the classifier"
            if t != 1.0 else "calibration: none (--no-calibrate, or too few held-out reviews)")
    return [head, f"{'':>14}{'before':>9}{'after':>9}",
            f"{'ECE (15 bins)':>14}{found['ece_before']:>9.4f}{found['ece_after']:>9.4f}",
            f"{'log loss':>14}{found['log_loss_before']:>9.4f}{found['log_loss_after']:>9.4f}"]


def coverage_text(rows: list[dict[str, float]]) -> list[str]:
    """Accuracy against coverage: which --min-confidence keeps which share of the test reviews, how accurately."""
    lines = ["accuracy against coverage (predict.py --min-confidence P marks the rest uncertain)",
             f"{'coverage':>9}{'P':>9}{'accuracy':>10}"]
    return lines + [f"{r['coverage']:>9.1%}{r['min_confidence']:>9.4f}{r['accuracy']:>10.4f}" for r in rows]


def top_losses(test_df: pd.DataFrame, proba: ArrayLike, class_names: Sequence[str], n: int) -> pd.DataFrame:
    """The `n` test reviews the model got wrong most confidently, worst first (a DataFrame)."""
    classes = np.asarray(class_names)
    proba = np.asarray(proba, dtype=float)
    truth = test_df[LABEL].to_numpy()
    predicted = proba.argmax(axis=1)
    column = {c: i for i, c in enumerate(classes)}
    p_true = proba[np.arange(len(proba)), [column[t] for t in truth]]
    frame = pd.DataFrame({"review": test_df[TEXT].to_numpy(), "true_label": truth,
                          "predicted_label": classes[predicted], "probability": proba.max(axis=1),
                          "loss": -np.log(np.clip(p_true, 1e-7, 1))})
    wrong = frame[frame["true_label"] != frame["predicted_label"]]
    return wrong.sort_values("loss", ascending=False, kind="stable").head(n).reset_index(drop=True)


def top_losses_csv(worst: pd.DataFrame) -> str:
    """top_losses.csv, for people in a spreadsheet: a review that starts like a formula is shown as text, never run
    (files.spreadsheet_safe), and a byte-order mark first, so Excel reads it as UTF-8 (reading.BOM)."""
    return reading.BOM + worst.assign(review=worst["review"].map(spreadsheet_safe)).to_csv(index=False)


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


def package_versions() -> dict[str, str]:
    """The versions that produced a run, for metrics.json."""
    return packages.versions(["ktrain", "tensorflow", "tf_keras", "transformers", "pandas", "numpy", "scikit-learn"])
