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
    status, why = answer(f"{hub_endpoint()}/{name}/resolve/main/config.json", timeout)
    if status is None and why.startswith("no answer"):
        why += "; on a slow connection, set HF_HUB_ETAG_TIMEOUT to wait longer"
    elif status is not None and status >= 400:
        why = f"it answered HTTP {status}"
    if why:
        raise UserError(f"could not load {name}: it is not in the Hugging Face cache ({compat.hf_hub_cache()}), "
                        f"and the Hub at {hub_endpoint()} cannot be reached ({why}); {fix}.")
