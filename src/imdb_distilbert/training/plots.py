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
    """Counts of true (rows) against predicted (columns) classes."""
    matrix, classes = np.asarray(metrics["confusion_matrix"]), metrics["classes"]
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, f"{n}\n{n / max(matrix[i].sum(), 1):.1%}", ha="center", va="center",
                color="white" if n > matrix.max() / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=f"test accuracy {metrics['accuracy']:.1%}")
    return png(fig)


def roc_curve(y_true: ArrayLike, proba: ArrayLike, classes: Sequence[str]) -> bytes:
    """ROC curve of the second class (pos) against the first."""
    fpr, tpr, _ = sk_roc_curve(np.asarray(y_true) == classes[1], np.asarray(proba)[:, 1])
    area = np.trapezoid(tpr, fpr)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, label=f"ROC-AUC {area:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC curve ({classes[1]})")
    ax.legend(loc="lower right")
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
