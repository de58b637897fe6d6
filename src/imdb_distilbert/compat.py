"""Every workaround for today's package versions, in one place.

The package imports this module first (imdb_distilbert/__init__.py), so its environment settings come
before TensorFlow loads. Each fix names the
upstream version it is for; delete it when upstream is fixed and the pin in requirements.txt moves.
One more is handled by a pin alone, in requirements.txt: transformers 5 has no TensorFlow
models, and 4.55+ fails to load the Hub's PyTorch `model.safetensors` into a TF model
("'builtins.safe_open' object is not iterable"), so transformers stays at 4.54.1.
At the end: the one environment fix for speed, which must act before a program starts (tcmalloc).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# TensorFlow >= 2.16 ships Keras 3, but the Hugging Face TF models (and ktrain) need Keras 2,
# which the `tf_keras` package provides when this is set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Hide TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes); errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")



def numpy_inf() -> None:
    """ktrain 0.41.4 (lroptimize/triangular.py, used by fit_onecycle) uses `np.Inf`, removed in NumPy 2.0.

    Called where training starts (training/learning.py), not at import: importing this package must not import
    NumPy (colab.setup() runs before anything is imported)."""
    import numpy as np

    if not hasattr(np, "Inf"):
        np.Inf = np.inf


def offline_if_cached(model_name: str) -> bool:
    """Load `model_name` from the local Hugging Face cache without asking the Hub, when it is there.

    huggingface_hub 0.36 / transformers 4.54 check the Hub on every load; without a network each check
    retries for about 20 seconds, and the tokenizer then fails to load even though it is cached. So
    once the model is fully cached, we go offline (HF_HUB_OFFLINE=1) before huggingface_hub is
    imported. An explicit HF_HUB_OFFLINE setting is left alone.
    """
    repo = cached_model_folder(model_name)
    try:
        with open(os.path.join(repo, "refs", "main")) as ref:
            snapshot = os.path.join(repo, "snapshots", ref.read().strip())
    except OSError:
        return False
    has = lambda *names: any(os.path.isfile(os.path.join(snapshot, n)) for n in names)  # noqa: E731
    cached = has("config.json") and has("vocab.txt", "tokenizer.json") and has("model.safetensors", "tf_model.h5")
    if cached:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return cached


def cached_model_folder(model_name: str) -> str:
    """Where huggingface_hub 0.36 caches the model `model_name` (its refs/ and snapshots/ are inside)."""
    return os.path.join(hf_hub_cache(), "models--" + model_name.replace("/", "--"))


def hf_hub_cache() -> str:
    """The folder huggingface_hub 0.36 caches models in: $HF_HUB_CACHE, else $HF_HOME/hub,
    else ~/.cache/huggingface/hub."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def check_keras2() -> None:
    """Stop with one clear sentence if TensorFlow was imported (with Keras 3) before this module."""
    import tensorflow as tf

    if not tf.keras.Model.__module__.startswith("tf_keras"):
        raise RuntimeError(
            "TensorFlow is using Keras 3, but ktrain needs Keras 2 (the tf_keras package): "
            "TensorFlow was imported before imdb_distilbert; restart Python and import imdb_distilbert first."
        )


def plain_strings(column: pd.Series) -> pd.Series:
    """Return a text column as a NumPy object array of `str`, the only form ktrain accepts.

    pandas 3 stores text as a string extension array, and ktrain 0.41.4's `texts_from_df`
    rejects it ("texts must be a list or NumPy array of strings"). requirements.txt pins
    pandas 2.3.3, and this keeps our data correct under pandas 3 as well.
    """
    return column.astype(object)


def recognise_dataset_subclasses() -> None:
    """Let ktrain take a subclass of its TransformerDataset for Hugging Face data (call after importing ktrain).

    ktrain 0.41.4 tells Hugging Face data by its class name (utils.is_huggingface_from_data: the name must be
    "TransformerDataset"), so text_classifier refuses a subclass, get_learner picks the wrong Learner for it
    and lr_find cannot restore the model after its sweep. learning.LengthGroupedDataset is one: check the type.
    """
    from ktrain import utils
    from ktrain.text.dataset import TransformerDataset

    utils.is_huggingface_from_data = lambda data: isinstance(data, TransformerDataset)


def fresh_optimizer() -> None:
    """Give the next model ktrain compiles an Adam of its own (call before text.text_classifier).

    ktrain 0.41.4 compiles every model with one legacy Adam made when ktrain is imported (utils.DEFAULT_OPT).
    A second model built in the same Python (a notebook's training cell run again) then starts with the first
    one's step count, so Adam's bias correction is off and its first steps are about 3x too large, and the
    first model's moments stay in memory (two floats per weight: 0.5 GB for DistilBERT) with every re-run.
    """
    import tensorflow as tf
    from ktrain import utils

    utils.DEFAULT_OPT = tf.keras.optimizers.legacy.Adam()


def lr_suggestions(finder: Any) -> dict[str, float | None]:
    """ktrain's three suggested learning rates from a finished lr_find, as floats (None if unknown).

    `finder` is ktrain's LRFinder (learner.lr_finder, after learner.lr_find()).

    ktrain 0.41.4 (lroptimize/lrfinder.py) finds the steepest descent in `losses[32:]` but reads
    the rate at that index of the full list, 32 steps too early; this adds the offset back.
    """
    _, min_loss_div_10, valley = finder.estimate_lr()
    import numpy as np

    slope = np.gradient(np.asarray(finder.losses[32:finder.ml])) if finder.ml > 33 else []
    steepest = finder.lrs[32 + int(np.argmin(slope))] if len(slope) else None
    return {name: None if lr is None else float(lr)
            for name, lr in (("steepest", steepest), ("min_loss_div_10", min_loss_div_10), ("valley", valley))}


# --- Speed: a faster memory allocator --------------------------------------------------------------
# TensorFlow (2.21, CPU) frees and re-allocates its large activation buffers every training step; glibc's
# malloc hands the biggest back to the kernel each time, and every step then page-faults them in again.
# tcmalloc keeps them (10-50x fewer page faults per step). How much time that saves depends on the
# machine's kernel: from 1.5x faster steps to a few percent (docs/performance.md, "Training speed on CPU").
# The library must be loaded before the program starts, so command lines re-run themselves once
# with LD_PRELOAD set.
FAST_MALLOC_OPT_OUT = "IMDB_FAST_MALLOC"  # set to 0 to keep the system allocator
FAST_MALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def fast_malloc_library() -> str | None:
    """The path of an installed tcmalloc (Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    arch = sysconfig.get_config_var("MULTIARCH") or ""  # e.g. x86_64-linux-gnu (Debian, Ubuntu)
    dirs = [os.path.join(d, arch) for d in ("/usr/lib", "/lib") if arch] + ["/usr/lib64", "/usr/lib", "/usr/local/lib"]
    for name in FAST_MALLOC_NAMES:
        for d in dirs:
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def malloc_in_use() -> str:
    """'tcmalloc' or 'jemalloc' when that is loaded in this process, else 'system'."""
    try:
        with open("/proc/self/maps") as maps:  # Linux; elsewhere the system allocator is in use
            text = maps.read()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc") if name in text), "system")


def use_fast_malloc() -> None:
    """Re-run this command with tcmalloc preloaded, if it is installed and not loaded yet.

    Call it first thing in a command-line program, before TensorFlow is imported: it replaces the
    process (os.execv, same process id, so signals and the exit status are the program's own) and
    does so at most once. It does nothing when the library is missing (macOS, Windows, a Linux without
    the libtcmalloc-minimal4 package), when LD_PRELOAD already names tcmalloc or jemalloc (set by
    the platform, or by the re-run), or when IMDB_FAST_MALLOC=0.
    """
    preload = os.environ.get("LD_PRELOAD", "")
    # LD_PRELOAD names tcmalloc after the re-run, so this also stops it from happening twice.
    if os.environ.get(FAST_MALLOC_OPT_OUT, "1") == "0" or "tcmalloc" in preload or "jemalloc" in preload:
        return
    # Only a program started as `python [options] script.py [args]` is re-run: not `python -c`, `-m`, nor
    # `%run script.py` in IPython or Jupyter, whose process is not the script's to replace.
    if sys.orig_argv[len(sys.orig_argv) - len(sys.argv):] != sys.argv:
        return
    library = fast_malloc_library()
    if library is None:
        return
    os.environ["LD_PRELOAD"] = f"{library} {preload}".strip()
    # tcmalloc prints a line for each allocation over 1 GB by default; TensorFlow's are routine.
    os.environ.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def uvicorn_header_deadline(seconds: float, answer: bytes, base: type | None = None) -> type:
    """uvicorn 0.54's HTTP/1.1 protocol with a deadline for a request's headers; pass it as uvicorn.Config(http=...).

    uvicorn 0.54 has none: a client that sends a request's headers a byte at a time, or nothing at all on a new
    connection, holds the connection as long as it likes (its keep-alive timeout runs only between requests, and
    only until the next request's first byte). This arms a timer of `seconds` when a connection opens and after each
    answer, and disarms it when a request's headers are complete (uvicorn has then made the request's `cycle`). When
    it fires, it writes `answer` (a whole HTTP response, a 408) if part of a request has come, and closes the
    connection. `base`: uvicorn's protocol class (default: what http="auto" picks, httptools' when installed, else
    h11's); it relies on their `cycle`, `transport`, `loop` and `on_response_complete`, as of uvicorn 0.54.
    """
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base

    class HeaderDeadline(base):
        timer = None  # the deadline's asyncio.TimerHandle while it is armed
        waited_from = None  # self.cycle when it was armed: a new cycle means the headers came
        heard = False  # bytes came since it was armed

        def arm(self) -> None:
            self.timer = self.loop.call_later(seconds, self.too_slow)
            self.waited_from, self.heard = self.cycle, False

        def disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def too_slow(self) -> None:
            self.timer = None
            if self.cycle is self.waited_from and not self.transport.is_closing():
                if self.heard:
                    self.transport.write(answer)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.arm()

        def data_received(self, data: bytes) -> None:
            self.heard = True
            super().data_received(data)
            if self.timer is not None and self.cycle is not self.waited_from:
                self.disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Wait for the next request's headers, unless the connection is closing or a pipelined request has
            # already begun (h11 starts it within on_response_complete).
            if self.timer is None and not self.transport.is_closing() and self.cycle.response_complete:
                self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

    return HeaderDeadline
