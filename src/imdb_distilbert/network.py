"""Can a run download what it needs? Asked once, in seconds, before it tries.

A training run downloads two things when they are missing: the splits (data/dataset.py) and the
pretrained DistilBERT from the Hugging Face Hub. Without a network, huggingface_hub 0.36 tries each
file it needs 5 times with a 10 s timeout and prints a warning for every try: measured here, 35 s and
33 lines when the port refuses connections, 99 s when nothing answers, before our one sentence. So
the run first asks each server once, with a HEAD request bounded to TIMEOUT seconds (from a thread, so
that not even a name lookup that hangs can keep it longer), and stops at once with one sentence if it
gets no answer.
"""

import os
import threading

from imdb_distilbert.errors import UserError

TIMEOUT = 5  # seconds without an answer that count as "no network" (for the Hub, HF_HUB_ETAG_TIMEOUT if set)
BASE_MODEL = "distilbert-base-uncased"  # what ktrain's DistilBERT preprocessing loads for English (training.py)
# The Hub revision (commit) of BASE_MODEL a run downloads, so a changed or tampered upload is never picked up.
# 12040acc is its main branch since 2024 (seen in public cache paths; the Hub is not reachable from the machine this
# was written on). IMDB_BASE_REVISION pins another (a mirror's, or the tests' fake Hub's).
BASE_REVISION = os.environ.get("IMDB_BASE_REVISION", "12040accade4e8a0f71eabdb258fecc2e7e948be")
# The files a TensorFlow DistilBERT loads (the weights as the Hub's PyTorch-format safetensors, which transformers
# 4.54 converts); the optional ones may be missing from a revision.
MODEL_FILES = ("config.json", "vocab.txt", "model.safetensors")
OPTIONAL_FILES = ("tokenizer.json", "tokenizer_config.json")
HUB = "https://huggingface.co"  # huggingface_hub's default; HF_ENDPOINT points elsewhere (a mirror, or the tests' port)


def answer(url: str, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
    """(HTTP status, None) when the server of `url` answers a HEAD request within `timeout` seconds,
    whatever the status; else (None, why not in a few words, such as "connection refused")."""
    found = []

    def ask() -> None:
        import requests  # what huggingface_hub 0.36 downloads with: the same proxies and certificates

        try:
            found.append((requests.head(url, timeout=timeout, allow_redirects=False).status_code, None))
        except requests.exceptions.Timeout:
            found.append((None, f"no answer within {timeout:g} s"))
        except requests.exceptions.RequestException as error:
            found.append((None, reason(error)))

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return found[0] if found else (None, f"no answer within {timeout:g} s")


def reason(error: BaseException) -> str:
    """The innermost cause of a requests error, in a few words: "connection refused", "name or service not known"."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
    return text[0].lower() + text[1:200]


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")


def offline() -> bool:
    """Whether huggingface_hub was told not to use the network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")  # huggingface_hub 0.36's reading of it


def check_model(name: str = BASE_MODEL) -> None:
    """Return when `name` is fully in the local Hugging Face cache (then it loads with no network, see
    compat.offline_if_cached) or the Hub answers; else stop with one sentence saying what to do."""
    from imdb_distilbert import compat

    if compat.offline_if_cached(name):
        return
    fix = ("connect to the internet once so it is downloaded and cached, "
           "or set HF_HOME to a Hugging Face cache that holds it")
    if offline():
        raise UserError(f"could not load {name}: it is not in the Hugging Face cache ({compat.hf_hub_cache()}), "
                        f"and HF_HUB_OFFLINE forbids downloading it; unset HF_HUB_OFFLINE and {fix}.")
    # huggingface_hub's own setting for how long to wait for the Hub's first answer (a slow link, a slow proxy)
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or TIMEOUT)
    status, why = answer(f"{hub_endpoint()}/{name}/resolve/{BASE_REVISION}/config.json", timeout)
    if status is None and why.startswith("no answer"):
        why += "; on a slow connection, set HF_HUB_ETAG_TIMEOUT to wait longer"
    elif status is not None and status >= 400:
        why = f"it answered HTTP {status}"
    if why:
        raise UserError(f"could not load {name}: it is not in the Hugging Face cache ({compat.hf_hub_cache()}), "
                        f"and the Hub at {hub_endpoint()} cannot be reached ({why}); {fix}.")
    download_model(name, BASE_REVISION)
    compat.offline_if_cached(name)


def download_model(name: str, revision: str) -> None:
    """Download `name` at the commit `revision` into the Hugging Face cache and make it the cache's "main" (what
    ktrain's from_pretrained(name) loads); called when the cache has no complete copy. In a child process, so that
    this one imports huggingface_hub only after going offline (compat.offline_if_cached: it reads that setting once,
    when imported)."""
    import subprocess
    import sys

    print(f"downloading {name} at revision {revision[:12]} from {hub_endpoint()}", flush=True)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds the package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-m", "imdb_distilbert.network", name, revision], env=env,
                           stdout=subprocess.PIPE, text=True)  # its progress bars go to stderr, as they come
    if child.returncode:
        why = (child.stdout.strip().splitlines() or ["it stopped"])[-1]
        raise UserError(f"could not download {name} at revision {revision} from {hub_endpoint()} ({why}); "
                        "run again, or set IMDB_BASE_REVISION to a revision the Hub has.")


def download(name: str, revision: str) -> None:
    """The child process of download_model."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for file in (*OPTIONAL_FILES, *MODEL_FILES):
        try:
            path = hf_hub_download(name, file, revision=revision)
        except EntryNotFoundError:
            if file not in OPTIONAL_FILES:
                raise
    refs = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(path))), "refs")
    os.makedirs(refs, exist_ok=True)
    with open(os.path.join(refs, "main"), "w") as ref:
        ref.write(revision)


def cached_revision(name: str = BASE_MODEL) -> str | None:
    """The commit of `name` that from_pretrained(name) loads from the cache (its "main"), for metrics.json."""
    from imdb_distilbert import compat

    try:
        with open(os.path.join(compat.cached_model_folder(name), "refs", "main")) as ref:
            return ref.read().strip()
    except OSError:
        return None


if __name__ == "__main__":  # download_model's child: python -m imdb_distilbert.network NAME REVISION
    import sys

    try:
        download(*sys.argv[1:3])
    except Exception as error:  # huggingface_hub raises its own kinds, and requests'
        print(reason(error))
        sys.exit(1)
