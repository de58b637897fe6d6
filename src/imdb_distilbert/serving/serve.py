"""Serve a predictor over HTTP: a JSON API and a small web page to try it in a browser.

    python src/serve.py --model models/distilbert-imdb                 # then open http://127.0.0.1:8000/
    curl -s http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"texts": ["a great film"]}'

POST /predict {"texts": [...]} answers {"backend": ..., "predictions": [{"label", "prob_neg", "prob_pos"}, ...]}
({"texts": [...], "min_confidence": P}: a review whose top probability is below P is labelled "uncertain"),
the numbers src/predict.py gives with the same backend. GET /health answers {"status": "ok", ...}.
A review longer than the model's maxlen is read as the training run chose (all of it, in overlapping windows whose
logits are averaged, or the part training kept), or as --long-reviews says; /health says which.
GET / is the web page (everything it needs is in it: no CDN): the label, its probability as a bar,
and the review with the words that decided it highlighted.
POST /explain {"texts": [...]} answers {"explanations": [...]}, inference/explain.py's word scores (and the
highlighted HTML the page shows) for each text's predicted class, or for the class named in "label", which are
gradients of the TensorFlow model: offered when TensorFlow and ktrain are installed (not with
requirements-serve.txt alone; --no-explain turns them off). The model is loaded at the first request.

At start-up the model is loaded and checks itself (inference/selfcheck.py): it scores the reviews the folder stores
with their answers and prints one line; if this environment does not reproduce them, the server refuses to start
(one sentence, exit 2) unless --skip-check.

Requests that arrive together are scored together (micro-batching: the first one waits at most a few
milliseconds for others), in one worker thread, so the event loop keeps accepting requests while the
model runs. The default backend is onnx-int8 when the folder has an ONNX export (src/export.py),
else ktrain. With an onnx backend nothing imports TensorFlow: requirements-serve.txt is enough.

The work it accepts is bounded: at most --max-queue texts waiting for the model (or in it), and
--max-explain-queue /explain requests. Past that, a request is answered at once with 503, a Retry-After
header and a JSON reason, and GET /health keeps answering and shows the queues. SIGTERM or Ctrl-C stops
it: no new connections, the requests in flight are answered (for at most --stop-timeout seconds), exit 0.

A hostile client costs little: one that takes longer than --header-timeout seconds to send a request's
headers, or --body-timeout seconds its body, is cut off with 408; past --max-connections open connections a
request gets 503; a Host header that names neither this machine's loopback, --host nor an --allowed-host gets
400 (DNS rebinding); and a /predict request that finds the queue full is refused before its body is read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from imdb_distilbert import cli, packages
from imdb_distilbert.data import windows
from imdb_distilbert.errors import UserError
from imdb_distilbert.inference import backends, explain, selfcheck

if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType

    import numpy as np
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response

MAX_BODY_BYTES = 1_000_000  # a request body larger than this gets 413
MAX_TEXTS = 64  # texts per request
MAX_CHARS = 20_000  # characters per text (the longest IMDB review has about 13,700)
MAX_BATCH = 64  # texts gathered into one model call, from however many requests
MAX_EXPLAIN_TEXTS = 8  # texts per /explain request (about 2 s each for full-size DistilBERT at maxlen 400 on 2 cores)
WAIT_SECONDS = 0.005  # how long the first request of a batch waits for others
# Texts waiting for the model or in it: at most about 2 s of work for full-size DistilBERT at maxlen 400 on 2 CPU
# cores (16 reviews/s), and as many as 32 clients posting one review each keep waiting, never refused.
MAX_QUEUE = 32
MAX_EXPLAIN_QUEUE = 4  # /explain requests waiting or being explained
STOP_SECONDS = 30  # on SIGTERM or Ctrl-C, how long the requests in flight may take before they are cut
HEADER_SECONDS = 10  # how long a client may take to send a request's headers (from the connection, or the last answer)
BODY_SECONDS = 30  # how long it may take to send a request's body (1 MB at most), from the end of its headers
# Open connections beyond which a request is answered 503: far more than the clients one model serves in time, and
# with the server's other files under 1,024, a common limit on a process's open files.
MAX_CONNECTIONS = 500
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")  # the names a server on this machine is reached at by default
LOOP_NICENESS = 10  # how much lower the event loop's CPU priority is than the model's (see below_the_model)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_option(p)
    p.add_argument("--backend", choices=backends.BACKENDS,
                   help="default: onnx-int8 when the folder has an ONNX export (src/export.py), else ktrain")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    p.add_argument("--batch-size", type=int, metavar="N", default=32, help="reviews per model call (default: 32)")
    cli.add_reading_options(p)
    p.add_argument("--no-explain", action="store_true",
                   help="no POST /explain and no highlighted words on the page "
                   "(default: on with the ktrain backend when TensorFlow is installed)")
    p.add_argument("--explain", action="store_true",
                   help="POST /explain and highlighted words with an onnx backend too: they load the TensorFlow "
                   "predictor, whose tf_model.preproc is a pickle (it can run code), so only for predictors you trust "
                   "(default: off with onnx backends, which unpickle nothing)")
    p.add_argument("--max-queue", type=int, metavar="N", default=MAX_QUEUE,
                   help="texts waiting for the model (or in it) beyond which /predict answers 503 busy, "
                   f"with Retry-After (default: {MAX_QUEUE}; a request is always taken when nothing waits)")
    p.add_argument("--max-explain-queue", type=int, metavar="N", default=MAX_EXPLAIN_QUEUE,
                   help="/explain requests waiting (or being explained) beyond which /explain answers 503 busy "
                   f"(default: {MAX_EXPLAIN_QUEUE})")
    p.add_argument("--stop-timeout", type=float, metavar="SECONDS", default=STOP_SECONDS,
                   help="on SIGTERM or Ctrl-C, how long the requests in flight may take to be answered before "
                   f"they are cut (default: {STOP_SECONDS})")
    p.add_argument("--header-timeout", type=float, metavar="SECONDS", default=HEADER_SECONDS,
                   help="how long a client may take to send a request's headers, from its connection or the last "
                   f"answer, before it is answered 408 and cut off (default: {HEADER_SECONDS})")
    p.add_argument("--body-timeout", type=float, metavar="SECONDS", default=BODY_SECONDS,
                   help="how long a client may take to send a request's body, from the end of its headers, before it "
                   f"is answered 408 and cut off (default: {BODY_SECONDS})")
    p.add_argument("--max-connections", type=int, metavar="N", default=MAX_CONNECTIONS,
                   help=f"open connections beyond which a request is answered 503 (default: {MAX_CONNECTIONS})")
    p.add_argument("--skip-check", action="store_true",
                   help="serve even when the self-check at start-up finds that this environment does not reproduce "
                   "the saved model's stored answers (the check still runs and prints its line)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name or address the server answers to in the Host header, besides localhost, 127.0.0.1, "
                   "[::1] and --host (a guard against DNS rebinding); repeat it for more; '*' allows any")
    args = p.parse_args(argv)
    if args.explain and args.no_explain:
        p.error("--explain and --no-explain do not go together")
    for name in ("batch_size", "max_queue", "max_explain_queue", "max_connections"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.stop_timeout < 0:
        p.error("--stop-timeout must be 0 or more")
    for name in ("header_timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be more than 0")
    if not 0 <= args.port <= 65535:
        p.error("--port must be between 0 and 65535")
    return args


def say(line: str) -> None:
    """What the server says to its operator beside the requests (the windows' cap): its standard error."""
    print(line, file=sys.stderr, flush=True)


def default_backend(model_dir: str | Path) -> tuple[str, str]:
    """onnx-int8 when `model_dir` has an ONNX export, else ktrain; and why, in words."""
    if backends.has_onnx_export(model_dir, "onnx-int8"):
        return "onnx-int8", "the folder has an ONNX export"
    return "ktrain", "the folder has no ONNX export; run src/export.py for the faster onnx-int8"


class Busy(Exception):
    """The server has as much work waiting as it takes: answered 503, with when to try again."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Bound:
    """Work accepted and not answered yet (texts, or requests), at most `limit` of it; and how fast it is done,
    to tell a refused client when to come back."""

    def __init__(self, limit: int, what: str, flag: str):
        self.limit, self.what, self.flag = limit, what, flag
        self.waiting = self.refused = 0
        self.per_second = None  # of `what`, measured on the model calls (a moving average)

    @contextlib.contextmanager
    def admit(self, n: int) -> Iterator[None]:
        """Hold `n` of the limit while the block runs; Busy if they do not fit (anything fits when nothing waits)."""
        if self.waiting and self.waiting + n > self.limit:
            raise self.refusal()
        self.waiting += n
        try:
            yield
        finally:
            self.waiting -= n

    def check_room(self) -> None:
        """Busy if nothing more fits now: checked before a request's body is read, so a full queue costs no reading."""
        if self.waiting >= self.limit:
            raise self.refusal()

    def refusal(self) -> Busy:
        self.refused += 1
        seconds = self.retry_after()
        what, verb = (self.what, "are") if self.waiting != 1 else (self.what[:-1], "is")  # "texts", "requests"
        return Busy(f"the server is busy: {self.waiting} {what} {verb} in progress or waiting, the most it takes "
                    f"({self.flag} {self.limit}); try again in {seconds} s.", seconds)

    def done(self, n: int, seconds: float) -> None:
        rate = n / max(seconds, 1e-6)
        self.per_second = rate if self.per_second is None else 0.7 * self.per_second + 0.3 * rate

    def retry_after(self) -> int:
        """Whole seconds until what waits now is done (1 to 60; 1 before anything was measured)."""
        return min(60, max(1, math.ceil(self.waiting / self.per_second))) if self.per_second else 1

    def health(self) -> dict[str, int]:
        return {"waiting": self.waiting, "max": self.limit, "refused": self.refused}


class Batcher:
    """Scores the texts of concurrent requests together, one model call at a time, off the event loop.
    `bound` counts the texts waiting for the model or in it (the route admits them)."""

    def __init__(self, model: backends.Backend, max_batch: int = MAX_BATCH, wait: float = WAIT_SECONDS,
                 max_queue: int = MAX_QUEUE):
        self.model, self.max_batch, self.wait = model, max_batch, wait
        self.bound = Bound(max_queue, "texts", "--max-queue")
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task = None
        self.requests = self.batches = 0  # how many of each were scored (GET /health shows them)

    async def predict_proba(self, texts: list[str]) -> np.ndarray:
        """The texts' probabilities, or Busy at once if the queue is full."""
        with self.bound.admit(len(texts)):
            future = asyncio.get_running_loop().create_future()
            await self.queue.put((texts, future))
            return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        held = None  # a request that did not fit into the last batch
        while True:
            items = [held or await self.queue.get()]
            held = None
            count = len(items[0][0])
            if count < self.max_batch:
                await asyncio.sleep(self.wait)  # let requests that arrive meanwhile join this batch
            while count < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                if count + len(item[0]) > self.max_batch:
                    held = item
                    break
                items.append(item)
                count += len(item[0])
            items = [(texts, future) for texts, future in items if not future.done()]  # drop abandoned requests
            if not items:
                continue
            texts = [text for batch, _ in items for text in batch]
            self.requests, self.batches = self.requests + len(items), self.batches + 1
            started = time.perf_counter()
            try:
                proba = await loop.run_in_executor(self.executor, self.model.predict_proba, texts)
                self.bound.done(len(texts), time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001  (reported to the waiting request as a 500)
                # One request's text may be what the model failed on: score each request alone, so that only
                # the request that fails again gets the error, and the others their answers.
                for batch, future in items:
                    try:
                        one = error if len(items) == 1 else await loop.run_in_executor(
                            self.executor, self.model.predict_proba, batch)
                    except Exception as alone:  # noqa: BLE001
                        one = alone
                    if not future.done():
                        future.set_exception(one) if isinstance(one, Exception) else future.set_result(one)
                continue
            start = 0
            for batch, future in items:
                if not future.done():
                    future.set_result(proba[start:start + len(batch)])
                start += len(batch)


def below_the_model() -> None:
    """Lower the CPU priority of the calling thread, the event loop's, below that of the model's threads, started
    before at normal priority. Under a flood of requests it must refuse, the loop would otherwise take the CPU
    the model needs, and serve fewer; this way the refusals get what the model leaves. Linux only, where the
    priority (nice value) is per thread; elsewhere it does nothing."""
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + LOOP_NICENESS))
    except OSError:
        pass


def explanations_off(args: argparse.Namespace, backend: str) -> str | None:
    """Why this server will not explain (None: it will). An onnx backend unpickles nothing; explanations load the
    TensorFlow predictor, which unpickles tf_model.preproc, so there they are on only when asked for (--explain)."""
    if args.no_explain:
        return "it was started with --no-explain"
    if backend != "ktrain" and not args.explain:
        return (f"the {backend} backend unpickles nothing, and explanations would load the TensorFlow predictor "
                "(a pickle); start the server with --explain to have them, for a predictor you trust")
    return why_no_explanations()


def why_no_explanations() -> str | None:
    """None when this Python can explain (inference/explain.py needs TensorFlow, tf_keras and ktrain), else why not."""
    missing = packages.missing(("tensorflow", "tf_keras", "ktrain"))
    return f"{missing[0]} is not installed; install requirements.txt to have them" if missing else None


class Explanations:
    """inference/explain.py's word scores, on the TensorFlow model of the predictor folder, in a thread of their own
    (so predictions keep flowing while a review is explained); the model is loaded at the first request."""

    def __init__(self, model_dir: str | Path, max_queue: int = MAX_EXPLAIN_QUEUE):
        self.model_dir = model_dir
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self.loaded = None  # (ktrain predictor, how the training run cut long reviews)
        self.bound = Bound(max_queue, "explanation requests", "--max-explain-queue")

    def explain(self, texts: list[str], label: str | None = None) -> list[dict]:
        """The explanations of `texts`, for the class `label` (default: each one's predicted class)."""
        if self.loaded is None:
            print("loading the TensorFlow model for explanations...", flush=True)
            self.loaded = explain.load(str(self.model_dir))
        predictor, cut = self.loaded
        started = time.perf_counter()
        found = explain.explain(predictor, texts, cut=cut, label=label)
        self.bound.done(1, time.perf_counter() - started)
        return found


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_json(request: Request) -> dict:
    """The request's JSON object, with its "texts", or BadRequest saying what is wrong in one sentence."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, f"the request body is larger than {MAX_BODY_BYTES} bytes; send fewer or shorter texts.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, f"the request body is larger than {MAX_BODY_BYTES} bytes; "
                             "send fewer or shorter texts.")
    try:
        payload = json.loads(bytes(body).decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8; send JSON encoded as UTF-8.") from None
    except RecursionError:  # [[[[... nested thousands deep
        raise BadRequest(400, 'the request body nests JSON too deeply; send {"texts": ["a review", ...]}.') from None
    except ValueError:
        raise BadRequest(400, 'the request body is not JSON; send {"texts": ["a review", ...]}.') from None
    if not isinstance(payload, dict) or "texts" not in payload:
        raise BadRequest(422, 'the JSON has no "texts"; send {"texts": ["a review", ...]}.')
    return payload


def texts_of(payload: dict, max_texts: int) -> list[str]:
    """The "texts" of a request's JSON, stripped, or BadRequest."""
    texts = payload["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(422, '"texts" must be a list of strings; send {"texts": ["a review", ...]}.')
    if not texts:
        raise BadRequest(422, '"texts" is empty; send at least one review.')
    if len(texts) > max_texts:
        raise BadRequest(413, f'"texts" has {len(texts)} reviews; send at most {max_texts} per request.')
    for i, text in enumerate(texts):
        if len(text) > MAX_CHARS:
            raise BadRequest(413, f"texts[{i}] has {len(text)} characters; send at most {MAX_CHARS} per review.")
        if not text.strip():
            raise BadRequest(422, f"texts[{i}] is empty; send reviews with some text.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800": valid JSON, but no tokenizer takes it
            raise BadRequest(422, f"texts[{i}] holds a lone surrogate (a half of a UTF-16 pair), which is not "
                             "text; send valid Unicode.") from None
    return [t.strip() for t in texts]  # as src/predict.py does


def min_confidence_of(payload: dict, classes: list[str]) -> float | None:
    """The request's "min_confidence" (predict.py --min-confidence: below it the label is "uncertain"), or None."""
    value = payload.get("min_confidence")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(422, '"min_confidence" must be a number, such as 0.9.')
    try:
        backends.check_min_confidence(float(value), classes, '"min_confidence"')
    except UserError as error:
        raise BadRequest(422, str(error)) from None
    return float(value)


def answer(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response (starlette is imported only when a server runs)."""
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def error(status: int, message: str) -> JSONResponse:
    """{"error": message}; a 408 also closes the connection (the rest of a slow body is not waited for)."""
    return answer({"error": message}, status, {"Connection": "close"} if status == 408 else None)


def busy(refused: Busy) -> JSONResponse:
    """503 for a request refused because the queue is full: the reason, and when to try again."""
    return answer({"error": str(refused), "retry_after": refused.retry_after}, 503,
                  {"Retry-After": str(refused.retry_after)})


def cut_when_stopping(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """`handler`, answering 503 when uvicorn cancels it, --stop-timeout seconds after SIGTERM or Ctrl-C
    (uvicorn would print a traceback and answer 500)."""
    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except asyncio.CancelledError:
            return error(503, "the server stopped before this request was finished; send it again.")
    return answered


class App:
    """The web app's state and its handlers: the page, GET /health, POST /predict and POST /explain, errors.
    `explanations`: an Explanations, or None (then POST /explain says `no_explain_because`); `max_queue`: the
    texts waiting for the model (or in it) beyond which /predict answers 503. The Batcher is made at startup."""

    def __init__(self, model: backends.Backend, backend: str, explanations: Explanations | None,
                 no_explain_because: str | None, max_queue: int = MAX_QUEUE):
        self.model, self.backend, self.max_queue = model, backend, max_queue
        self.explanations, self.no_explain_because = explanations, no_explain_because
        self.batcher = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        batcher = self.batcher = Batcher(self.model, max_queue=self.max_queue)
        explanations = self.explanations
        loop = asyncio.get_running_loop()
        for executor in [batcher.executor, *([explanations.executor] if explanations else [])]:
            await loop.run_in_executor(executor, lambda: None)  # their threads start now, at normal priority
        below_the_model()
        batcher.task = asyncio.create_task(batcher.run())
        yield
        batcher.task.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)
        if explanations:
            explanations.executor.shutdown(wait=False, cancel_futures=True)

    async def page(self, request: Request) -> HTMLResponse:
        from starlette.responses import HTMLResponse

        return HTMLResponse(PAGE)

    async def health(self, request: Request) -> JSONResponse:
        batcher, explanations = self.batcher, self.explanations
        return answer({"status": "ok", "backend": self.backend, "classes": self.model.classes,
                       "explain": explanations is not None,
                       **({} if explanations else {"explain_off_because": self.no_explain_because}),
                       "requests_scored": batcher.requests, "model_calls": batcher.batches,
                       "batch_size": self.model.batch_size,  # reviews per model call at most (--batch-size)
                       # how a review longer than maxlen is read (--long-reviews, --window-overlap, --max-windows)
                       "maxlen": self.model.reading.maxlen, **self.model.reading.record(),
                       "queue": {"texts": batcher.bound.health(),
                                 **({"explain_requests": explanations.bound.health()} if explanations else {})}})

    async def predict_route(self, request: Request) -> JSONResponse:
        try:
            self.batcher.bound.check_room()
            payload = await read_json(request)
            texts, min_confidence = texts_of(payload, MAX_TEXTS), min_confidence_of(payload, self.model.classes)
        except BadRequest as bad:
            return error(bad.status, str(bad))
        except Busy as refused:
            return busy(refused)
        try:
            proba = await self.batcher.predict_proba(texts)
        except Busy as refused:
            return busy(refused)
        except Exception as failure:  # noqa: BLE001  (a model failure must not take the server down)
            print(f"error scoring {len(texts)} texts: {failure!r}", file=sys.stderr, flush=True)
            return error(500, "the model failed on this request; see the server's log.")
        rows = [{k: v for k, v in row.items() if k != "text"}
                for row in backends.rows(texts, proba, self.model.classes, min_confidence)]
        return answer({"backend": self.backend, "predictions": rows})

    async def explain_route(self, request: Request) -> JSONResponse:
        explanations = self.explanations
        if explanations is None:
            return error(503, f"explanations are off on this server: {self.no_explain_because}.")
        try:
            explanations.bound.check_room()
            payload = await read_json(request)
            texts, label = texts_of(payload, MAX_EXPLAIN_TEXTS), payload.get("label")
            if label is not None and label not in self.model.classes:
                raise BadRequest(422, f'"label" must be one of the classes ({", ".join(self.model.classes)}), '
                                 "or left out for the predicted one.")
        except BadRequest as bad:
            return error(bad.status, str(bad))
        except Busy as refused:
            return busy(refused)
        try:
            with explanations.bound.admit(1):
                loop = asyncio.get_running_loop()
                found = await loop.run_in_executor(explanations.executor, explanations.explain, texts, label)
        except Busy as refused:
            return busy(refused)
        except Exception as failure:  # noqa: BLE001  (as for /predict)
            print(f"error explaining {len(texts)} texts: {failure!r}", file=sys.stderr, flush=True)
            return error(500, "the explanation failed on this request; see the server's log.")
        found = [{**f, "html": explain.highlight(f)} for f in found]  # what the page shows
        return answer({"explained_by": "ktrain (the TensorFlow model)", "explanations": found})

    async def http_error(self, request: Request, exc: HTTPException) -> JSONResponse:
        """404 and 405, in JSON like every other error, saying what there is."""
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}; "
                                      "use GET /, GET /health, POST /predict or POST /explain.")


def create_app(model: backends.Backend, backend: str, explanations: Explanations | None,
               no_explain_because: str | None, max_queue: int = MAX_QUEUE, hosts: Collection[str] | None = None,
               body_seconds: float = BODY_SECONDS, max_connections: int = MAX_CONNECTIONS) -> Guard:
    """The web app: App's handlers on their routes (arguments as for App), behind the Guard (the others: as for it)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    app = App(model, backend, explanations, no_explain_because, max_queue)
    routes = [Route("/", app.page, methods=["GET"]), Route("/health", app.health, methods=["GET"]),
              Route("/predict", cut_when_stopping(app.predict_route), methods=["POST"]),
              Route("/explain", cut_when_stopping(app.explain_route), methods=["POST"])]
    return Guard(Starlette(routes=routes, lifespan=app.lifespan, exception_handlers={HTTPException: app.http_error}),
                 hosts, body_seconds, max_connections)


def page_policy(page: str) -> str:
    """The page's Content-Security-Policy: its one inline script (by its SHA-256), inline styles (the highlighted
    words are coloured by style attributes), requests to its own server only; nothing else, from anywhere."""
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'")


class Guard:
    """ASGI middleware in front of the app. Every response gets headers that keep a browser from sniffing a JSON
    answer into a page, from sending the page's address elsewhere, and from running anything in the page but its
    own script. Before the app sees a request, the Guard refuses:

    - a Host header naming none of `hosts` (400; None: any name): a page on another site can make its own name point
      to 127.0.0.1 (DNS rebinding) and then read this server's answers as its own, but its requests still carry its
      own name;
    - a request on a connection beyond `max_connections` open ones (503; `connections` is the server's set of open
      connections, which make_server gives it);
    - a POST whose body is not declared JSON (415), before the body is read: a page on another site can send a form
      or text/plain POST to a server on your machine without asking, but not an application/json one (a browser
      asks the server first, and this server never says yes).

    The app's `receive` raises BadRequest(408) when the body has not all come `body_seconds` after the headers."""

    def __init__(self, app: Callable, hosts: Collection[str] | None = None, body_seconds: float = BODY_SECONDS,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.app, self.hosts, self.body_seconds, self.max_connections = app, hosts, body_seconds, max_connections
        self.connections: Collection = ()  # the server's open connections (make_server sets it)
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"content-security-policy", page_policy(PAGE).encode())]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        refused = self.refusal(scope)
        if refused is not None:
            return await refused(scope, receive, send_with_headers)
        await self.app(scope, body_in_time(receive, self.body_seconds), send_with_headers)

    def refusal(self, scope: dict) -> JSONResponse | None:
        """The answer to a request refused before the app sees it, or None."""
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.hosts is not None and host and host not in self.hosts:
            return error(400, f"the Host header names {host[:100]}, which is not a name this server answers to (a "
                              f"guard against DNS rebinding); start it with --allowed-host {host[:100]} to allow it.")
        if len(self.connections) > self.max_connections:
            return answer({"error": f"the server has {len(self.connections)} connections open, more than it takes "
                                    f"(--max-connections {self.max_connections}); try again in 1 s.", "retry_after": 1},
                          503, {"Retry-After": "1", "Connection": "close"})
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and kind != b"application/json":
            return error(415, "the request body must be JSON, declared with the header Content-Type: "
                              "application/json.")
        return None


def body_in_time(receive: Callable, seconds: float) -> Callable:
    """`receive`, raising BadRequest(408) when the request's body has not all come within `seconds` from now."""
    deadline = asyncio.get_running_loop().time() + seconds
    complete = False

    async def receive_in_time() -> dict:
        nonlocal complete
        if complete:  # what comes after the body (a disconnect) may take as long as it takes
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise BadRequest(408, f"the request body did not all come within {seconds:g} s of its headers "
                                  f"(--body-timeout {seconds:g}); send it at once.") from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_in_time


def host_name(value: str) -> str:
    """A Host header's name or address, lower-case, without its port: 'LocalHost:8000' -> 'localhost',
    '[::1]:8000' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.partition(":")[0] if value.count(":") == 1 else value


def allowed_hosts(host: str, allowed: Sequence[str]) -> set[str] | None:
    """The names the server answers to in the Host header: this machine's loopback names, the address it listens on
    (`host`, --host) and `allowed` (--allowed-host); None (any name) when `allowed` has '*'."""
    if "*" in allowed:
        return None
    return {host_name(name) for name in (*LOOPBACK_NAMES, host, *allowed)}


def raw_answer(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response saying `message` in JSON, closing the connection: for the header deadline, which
    answers before there is a request for the app."""
    from http import HTTPStatus

    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
            ).encode() + body


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a UserError saying why not."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(256)
    except OSError as failure:
        raise UserError(f"cannot listen on {host}:{port} ({failure.strerror or failure}); "
                        "choose another --port, or stop what is using it.") from None
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backends.check_predictor_folder(args.model)
    backend, why = (args.backend, "chosen with --backend") if args.backend else default_backend(args.model)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as missing:
        raise UserError(f"serving needs {missing.name}, which is not installed; "
                        "run `pip install -r requirements-serve.txt`.") from None
    reading = cli.reading_of(args)
    backends.with_settings(windows.saved_reading(args.model), **reading)  # a bad value is said before anything loads
    sock = listen(args.host, args.port)  # before loading: a busy port is reported at once
    print(f"backend {backend} ({why}); loading {args.model}...", flush=True)
    model = backends.load(args.model, backend, args.batch_size)
    # Does this environment reproduce the saved model? Its stored reviews are scored (also the first call's set-up,
    # so the first request is not slow); a model that gives other answers is not served unless --skip-check. They are
    # scored as the run read long reviews, which is how their answers were stored; then as --long-reviews says.
    checked = selfcheck.check(args.model, backend, model)
    model.reading = backends.with_settings(model.reading, **reading)
    model.say = say  # the windows' cap (--max-windows), said for each model call that hits it
    print(checked.line, flush=True)
    if checked.reproduced is None:
        model.predict_proba(["warm-up"])
    if checked.reproduced is False and not args.skip_check:
        raise UserError(f"{args.model} does not give its stored answers in this environment (the self-check line "
                        "above says by how much, and which packages differ), so it is not served; install the "
                        "versions it was saved with, or start with --skip-check to serve it anyway.")
    why_not = explanations_off(args, backend)
    if args.explain and not why_not and backend != "ktrain":
        print(f"warning: --explain loads {args.model}/tf_model.preproc, a pickle, at the first /explain request; "
              "a pickle can run code: serve only predictors you trust.", flush=True)
    explanations = None if why_not else Explanations(args.model, args.max_explain_queue)
    print("explanations: " + (f"off ({why_not})" if why_not else
                              "on (POST /explain; the TensorFlow model is loaded at the first request)"), flush=True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    app = create_app(model, backend, explanations, why_not, args.max_queue, allowed_hosts(args.host, args.allowed_host),
                     args.body_timeout, args.max_connections)
    server = make_server(app, args)
    server.run(sockets=[sock])
    name, asked = server.stop_asked or ("", time.monotonic())
    print(f"stopped {f'by {name} ' if name else ''}in {time.monotonic() - asked:.1f} s", flush=True)


def make_server(app: Guard, args: argparse.Namespace, protocol: type | None = None) -> uvicorn.Server:
    """uvicorn's server for `app`, with the deadline for headers (args.header_timeout) and the stop of
    stopping_server (args.stop_timeout); `app` is given the server's open connections, which it caps. `protocol`:
    uvicorn's HTTP/1.1 protocol class (default: httptools' when installed, else h11's, as uvicorn picks)."""
    import uvicorn

    from imdb_distilbert import compat

    too_slow = raw_answer(408, f"the request headers did not all come within {args.header_timeout:g} s "
                               f"(--header-timeout {args.header_timeout:g}); send them at once.")
    http = compat.uvicorn_header_deadline(args.header_timeout, too_slow, protocol)
    server = stopping_server(uvicorn.Config(app, log_level="warning", access_log=False,
                                            timeout_graceful_shutdown=args.stop_timeout, http=http))
    app.connections = server.server_state.connections  # uvicorn 0.54: the set of open connections it keeps
    return server


def stopping_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's Server, whose stop on SIGTERM or Ctrl-C (SIGINT) ends the process with exit status 0.

    On either signal uvicorn stops gracefully: it closes the listening socket (new connections are refused),
    lets the requests in flight finish (for at most config.timeout_graceful_shutdown seconds, then cuts them),
    and runs the app's shutdown. A second Ctrl-C stops at once. Then uvicorn (0.29 and later; 0.54 here)
    raises the signal again, so that the process ends by it: status -15, or a KeyboardInterrupt. A stop that
    was asked for and carried out is a success for a service manager (systemd, Docker, Kubernetes), so this
    server restores the previous handlers without raising it again, and says when the stop begins.
    """
    import uvicorn

    class Server(uvicorn.Server):
        stop_asked = None  # (signal name, time.monotonic()) of the first SIGTERM or SIGINT

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():  # a server in a test's thread
                yield
                return
            handlers = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.stop_asked is None:
                self.stop_asked = (signal.Signals(sig).name, time.monotonic())
                print(f"stopping ({self.stop_asked[0]}): new connections are refused, the requests in flight answered "
                      f"(for at most {self.config.timeout_graceful_shutdown:g} s; Ctrl-C again stops at once)",
                      flush=True)
            super().handle_exit(sig, frame)

    return Server(config)


# The web page, read once: templates/page.html, served as it is (everything it needs is in it).
PAGE = (resources.files("imdb_distilbert.serving") / "templates" / "page.html").read_text(encoding="utf-8")
