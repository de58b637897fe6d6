"""The plots a run writes next to its numbers. Each function returns PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; no window (the notebook shows the PNGs itself)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve as sk_roc_curve  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def confusion_matrix(metrics: dict[str, Any]) -> bytes:
    """Counts of true (rows) against predicted (columns) classes, each with its share of the row."""
    matrix, classes = np.asarray(metrics["confusion_matrix"]), [str(c) for c in metrics["classes"]]
    k = len(classes)
    side = 1.1 * k + 1.5  # room for each cell's two lines as the classes grow
    fig, ax = plt.subplots(figsize=(4.2, 3.8) if k <= 3 else (side, side * 0.9))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, f"{n}\n{n / max(matrix[i].sum(), 1):.1%}", ha="center", va="center",
                fontsize=10 if k <= 5 else 8, color="white" if n > matrix.max() / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=f"test accuracy {metrics['accuracy']:.1%}")
    if max(len(c) for c in classes) * k > 40:  # long names side by side would overlap
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return png(fig)


def roc_curve(y_true: ArrayLike, proba: ArrayLike, classes: Sequence[str]) -> bytes:
    """Two classes: the ROC curve of the second (pos) against the first. More: one curve per class against all
    the others (one-vs-rest), each with its area."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    fig, ax = plt.subplots(figsize=(4.2, 4) if len(classes) == 2 else (5.2, 4.6))
    for i, c in enumerate(classes[1:] if len(classes) == 2 else classes, start=1 if len(classes) == 2 else 0):
        if len(set(y_true == c)) < 2:  # this class, or every other, is missing from the test split
            continue
        fpr, tpr, _ = sk_roc_curve(y_true == c, proba[:, i])
        label = f"ROC-AUC {np.trapezoid(tpr, fpr):.3f}" if len(classes) == 2 else f"{c}: {np.trapezoid(tpr, fpr):.3f}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    title = f"ROC curve ({classes[1]})" if len(classes) == 2 else "ROC curves, each class against the rest"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", **({} if len(classes) == 2 else {"fontsize": 9 if len(classes) <= 6 else 7}))
    return png(fig)


def training_curves(history: dict[str, list[float]]) -> bytes:
    """Loss and accuracy per epoch (train and validation), and the learning rate at every step."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=False):  # 3 axes: the third is the learning rate's
        for prefix, label in (("", "train"), ("val_", "validation")):
            if history.get(prefix + key):
                ax.plot(epochs, history[prefix + key], "o-", label=label)
        ax.set(xlabel="epoch", ylabel=key, title=key, xticks=list(epochs))
        ax.legend()
    axes[2].plot(range(1, len(history.get("lr", [])) + 1), history.get("lr", []))
    axes[2].set(xlabel="training step", ylabel="learning rate", title="one-cycle schedule")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return png(fig)


def lr_find(found: dict[str, Any]) -> bytes:
    """Loss against learning rate from the learning-rate finder, with its suggestions marked."""
    lrs, losses = np.asarray(found["lrs"]), np.asarray(found["losses"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    colors = {"steepest": "purple", "min_loss_div_10": "green", "valley": "red"}
    for name, lr in found["suggested"].items():
        if lr is not None:
            ax.axvline(lr, color=colors[name], linestyle="--", label=f"{name.replace('_', ' ')}: {lr:.1e}")
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss", title="learning-rate finder")
    ax.legend()
    return png(fig)


def reliability(before: ArrayLike, after: ArrayLike, truth: Sequence[int], temperature: float) -> bytes:
    """The reliability diagram: accuracy against mean top probability per bin, before and after the temperature
    (the diagonal is perfect calibration), with each bin's share of the reviews below."""
    from imdb_distilbert.training import calibration

    fig, (ax, share) = plt.subplots(2, 1, figsize=(4.6, 5.2), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="perfectly calibrated")
    for proba, name, colour in ((before, "before", "tab:red"), (after, f"after (T = {temperature:.2f})", "tab:blue")):
        if name == "before" and temperature == 1.0:
            continue  # not calibrated: one curve
        table = calibration.reliability(proba, truth)
        ece = calibration.ece(proba, truth)
        ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], marker="o", markersize=4,
                color=colour, label=f"{name}: ECE {ece:.3f}")
        share.bar([(b["low"] + b["high"]) / 2 for b in table], [b["reviews"] / len(truth) for b in table],
                  width=1 / calibration.BINS, color=colour, alpha=0.4)
    low = 1 / np.asarray(after).shape[1]
    ax.set(xlim=(low - 0.02, 1.01), ylim=(0, 1.01), ylabel="accuracy", title="reliability on the test split")
    ax.legend(loc="upper left", fontsize=8)
    share.set(xlabel="top probability (15 bins)", ylabel="reviews")
    return png(fig)
