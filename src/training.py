"""Fine-tune DistilBERT with ktrain: preprocess, build, train, save. The tutorial's recipe.

Imported by src/train.py and by the notebook, so the two run exactly the same code.
"""

import compat  # first, before TensorFlow: selects Keras 2 and patches NumPy for ktrain

import os
import shutil
import tempfile
from pathlib import Path


MODEL_NAME = "distilbert-base-uncased"  # what ktrain's DistilBERT preprocessing loads for English

compat.offline_if_cached(MODEL_NAME)
compat.check_keras2()
import ktrain  # noqa: E402
import tensorflow as tf  # noqa: E402
from ktrain import text  # noqa: E402

from dataset import LABEL, TEXT  # noqa: E402
from errors import UserError  # noqa: E402


def set_seed(seed):
    """Seed Python, NumPy and TensorFlow, so a run can be repeated."""
    tf.keras.utils.set_random_seed(seed)


def preprocess(train_df, test_df, maxlen):
    """Tokenize both splits for DistilBERT. Returns ktrain's (train, val, preproc)."""
    try:
        return text.texts_from_df(
            train_df, TEXT, label_columns=[LABEL], val_df=test_df,
            maxlen=maxlen, preprocess_mode="distilbert",
            # Without lang=, ktrain guesses the language from the texts, and any guess but
            # English silently switches to distilbert-base-multilingual-cased.
            lang="en",
        )
    except (OSError, ValueError) as error:
        if isinstance(error, OSError) or "Could not load tokenizer" in str(error):
            raise UserError(
                f"could not load {MODEL_NAME} from the Hugging Face Hub or its local cache ({first_line(error)}); "
                "connect to the internet once so it is downloaded and cached, "
                "or set HF_HOME to a cache that holds it."
            ) from None
        raise


def build_learner(train, val, preproc, batch_size):
    """DistilBERT with a fresh classification head, wrapped in a ktrain Learner."""
    model = text.text_classifier("distilbert", train_data=train, preproc=preproc)
    return ktrain.get_learner(model, train_data=train, val_data=val, batch_size=batch_size)


def fit(learner, lr, epochs, callbacks=()):
    """Train with the one-cycle policy (learning rate up, then down) for `epochs` epochs."""
    return learner.fit_onecycle(lr, epochs, callbacks=list(callbacks))


def save_predictor(learner, preproc, output, extra_files=None):
    """Save a ktrain predictor (plus `extra_files`, name -> text) to `output`, all or nothing.

    Everything is written to a hidden folder next to `output` and renamed into place only when
    complete; an existing `output` is replaced only then. A crash or Ctrl-C mid-save leaves
    `output` as it was (absent, or the previous run's predictor).
    """
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob(f".{output.name}.partial-*"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the predictor is an ordinary folder
        ktrain.get_predictor(learner.model, preproc).save(str(staging))
        for name, content in (extra_files or {}).items():
            (staging / name).write_text(content)
        replace_dir(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def replace_dir(new, target):
    """Move folder `new` to `target`, replacing any existing `target` only at the last moment."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
