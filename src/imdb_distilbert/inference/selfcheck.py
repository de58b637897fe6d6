"""Does this environment reproduce the saved model? The predictor folder carries the answers to check it with.

    python src/predict.py --model models/distilbert-imdb --check                       # one line; exit 0 if it does
    python src/predict.py --model models/distilbert-imdb --backend onnx-int8 --check

Saving a predictor (training/recipe.py) writes SELF_CHECK into its folder: a few reviews (from the run's test split,
one of them longer than maxlen, so the run's cut of long reviews is checked too), the saved model's probabilities for
them as `predict.py --backend ktrain` computes them, the classes, and the versions of the packages that decide those
numbers. src/export.py adds its ONNX models' answers for the same reviews and the versions it ran with.

check() scores the reviews again with a backend and says in one line whether the answers are the stored ones:
- ktrain and onnx (fp32): within TOLERANCE (1e-4, the export's own fp32 bar) of the saved model's probabilities;
- onnx-int8: within INT8_TOLERANCE of the answers the int8 model gave when it was exported. Int8 is not compared with
  the saved model: quantization moves its probabilities by more than 1e-4, by an amount the export measured and
  accepted (onnx.json). What must not move is int8 itself: export/quantize.py makes its integer sums exact on every
  x86 CPU, so only the float parts (as in fp32) and an activation that rounds to the next int8 step can differ.
When they differ it names the packages whose versions differ from those the answers were stored with.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imdb_distilbert import packages
from imdb_distilbert.inference import backends

SELF_CHECK = "self_check.json"
N_REVIEWS = 8  # reviews stored: N_REVIEWS - 1 picked at random, and one longer than maxlen
TOLERANCE = 1e-4  # largest difference in a probability for ktrain and onnx (fp32): what src/export.py demands of fp32
INT8_TOLERANCE = 1e-3  # for onnx-int8 against its own answers at export: 10x the fp32 allowance (see the docstring)
KTRAIN_PACKAGES = ("ktrain", "tensorflow", "tf_keras", "transformers", "tokenizers", "numpy")  # and python
ONNX_PACKAGES = ("onnxruntime", "onnx", "tokenizers", "numpy")  # and python


def pick_reviews(texts: Sequence[str], maxlen: int, seed: int = 0, n: int = N_REVIEWS) -> list[str]:
    """`n` reviews from `texts` (non-empty): n - 1 at random (seeded), then the longest, which is made longer than
    `maxlen` word pieces, if it is not, by adding other reviews after it (every word is at least one word piece)."""
    texts = [t for t in texts if t.strip()]
    longest = max(texts, key=len)
    others = [t for t in texts if t is not longest]
    chosen = random.Random(seed).sample(others, min(n - 1, len(others)))
    added = 0
    while len(longest.split()) <= maxlen:
        longest += " " + (others or texts)[added % len(others or texts)]
        added += 1
    return [*chosen, longest]


def record(reviews: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> str:
    """SELF_CHECK's text: the reviews, the saved model's probabilities for them and this environment's versions."""
    return to_json({"reviews": list(reviews), "classes": list(classes), "proba": rounded(proba),
                    "versions": packages.versions(KTRAIN_PACKAGES)})


def with_onnx(stored: dict, answers: dict[str, np.ndarray]) -> str:
    """SELF_CHECK's text with what the ONNX models answered (`answers`: backend -> probabilities) and the versions."""
    return to_json({**stored, "onnx": {"proba": {name: rounded(p) for name, p in answers.items()},
                                       "versions": packages.versions(ONNX_PACKAGES)}})


def rounded(proba: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 8) for x in row] for row in np.asarray(proba)]


def to_json(stored: dict) -> str:
    return json.dumps(stored, indent=1, ensure_ascii=False) + "\n"


def stored(folder: str | Path) -> dict | None:
    """What SELF_CHECK in `folder` holds; None when the folder has none (saved before self-checks)."""
    path = Path(folder) / SELF_CHECK
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Result:
    """reproduced: True, False, or None when there is nothing to compare with; line: the one line that says so."""

    reproduced: bool | None
    line: str


def check(folder: str | Path, backend: str = "ktrain", model: Any = None, batch_size: int = 32) -> Result:
    """Score the stored reviews with `backend` (or `model`, already loaded: a backends.Backend or a ktrain predictor)
    and compare with the stored answers."""
    saved = stored(folder)
    if saved is None:
        return Result(None, f"self-check: {folder} has no {SELF_CHECK} (saved before predictors checked themselves), "
                            "so nothing says whether this environment reproduces it; train it again to get one.")
    expected, tolerance, then = np.asarray(saved["proba"]), TOLERANCE, saved["versions"]
    names = KTRAIN_PACKAGES
    if backend != "ktrain":
        names = ONNX_PACKAGES
        then = saved.get("onnx", {}).get("versions", {k: v for k, v in then.items() if k in ("python", *names)})
    if backend == "onnx-int8":
        if "onnx" not in saved:
            return Result(None, f"self-check: {folder}/{SELF_CHECK} has no answers of the int8 model (exported before "
                                "predictors checked themselves); run src/export.py again to add them.")
        expected, tolerance = np.asarray(saved["onnx"]["proba"]["onnx-int8"]), INT8_TOLERANCE
    model = model if model is not None else backends.load(folder, backend, batch_size)
    proba = scores(model, saved["reviews"], folder)
    n = len(saved["reviews"])
    differ = changed(then, packages.versions(names))
    if list(model_classes(model)) != saved["classes"]:
        return Result(False, f"self-check: NOT reproduced: the {backend} backend's classes are "
                             f"{list(model_classes(model))}, the saved model's {saved['classes']}; {named(differ)}")
    gap = float(np.abs(proba - expected).max())
    if gap <= tolerance:
        note = f"; versions differ from the stored answers' ({', '.join(differ)}), the answers do not" if differ else ""
        return Result(True, f"self-check: reproduced: the {backend} backend gives the stored answers for {n} reviews "
                            f"(largest difference {gap:.1e}, tolerance {tolerance:.0e}){note}")
    return Result(False, f"self-check: NOT reproduced: the {backend} backend's probabilities for the {n} stored "
                         f"reviews differ from the stored ones by up to {gap:.2e} (tolerance {tolerance:.0e}); "
                         f"{named(differ)}")


def scores(model: Any, texts: list[str], folder: str | Path) -> np.ndarray:
    """Probabilities of `texts` from a backend, or from a ktrain predictor (long reviews read as the run chose)."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(texts))
    return backends.predict_like_saved_run(model, texts, folder)


def model_classes(model: Any) -> list[str]:
    return model.classes if hasattr(model, "classes") else model.get_classes()


def changed(then: dict[str, str], now: dict[str, str]) -> list[str]:
    """'name old -> new' for each package whose version differs."""
    return [f"{name} {then[name]} -> {now.get(name, 'not installed')}" for name in then if then[name] != now.get(name)]


def named(differ: list[str]) -> str:
    if differ:
        return "packages that differ from the ones the answers were stored with: " + ", ".join(differ)
    return ("the packages that decide the numbers have the stored versions, so suspect the folder's files "
            "(copied incompletely, or changed) or the hardware")
