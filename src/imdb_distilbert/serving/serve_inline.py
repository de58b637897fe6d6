"""The web page of src/serve.py inside a notebook: start the server in the background, show its page, stop it.

    page = serve_inline.start("models/distilbert-imdb")    # in one cell: the page appears below it
    page.stop()                                            # in a later cell: the server ends, its port is free

In Colab nobody can open http://127.0.0.1:8000/: the browser is not on the runtime's machine. So the
page is shown through Colab's proxy to the kernel's ports (google.colab.output.serve_kernel_port_as_iframe,
and a link that opens it in a tab of its own). In Jupyter it is an IFrame to http://127.0.0.1:PORT/, which
works where the browser runs on the kernel's machine (a local Jupyter; over SSH, forward the port).

The server is src/serve.py in a process of its own, with the same Python as the kernel, on a free port of
127.0.0.1. It scores on the CPU (the notebook's TensorFlow holds the GPU's memory), with the backend
src/serve.py chooses (onnx-int8 after src/export.py, else ktrain), and highlights words when TensorFlow is
installed. A review longer than the model's maxlen is read as the training run chose, unless start()'s
long_reviews, window_overlap or max_windows say otherwise (src/serve.py's --long-reviews and the others).
It ends with the kernel if stop() was not called.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from imdb_distilbert import ROOT

SERVE = ROOT / "src" / "serve.py"
STARTED = re.compile(r"serving on http://([\d.]+):(\d+)/")
_running = []  # the servers this kernel started and has not stopped


class Page:
    """A src/serve.py process started by start(): its `port` and `url`, `health()`, and `stop()`."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log: str):
        self.process, self.host, self.port, self.log = process, host, port, log
        self.url = f"http://{host}:{port}/"

    def health(self) -> dict:
        """The server's GET /health answer."""
        with urllib.request.urlopen(self.url + "health", timeout=30) as answer:
            return json.loads(answer.read())

    def stop(self, seconds: float = 20) -> None:
        """End the server (SIGTERM, then SIGKILL after `seconds`) and free its port."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self in _running:
            _running.remove(self)
        Path(self.log).unlink(missing_ok=True)
        print(f"stopped the server; port {self.port} is free")


def start(model_dir: str | Path, backend: str | None = None, height: int = 640, timeout: float = 600,
          long_reviews: str | None = None, window_overlap: int | None = None, max_windows: int | None = None) -> Page:
    """Start src/serve.py on the predictor in `model_dir` and show its page below the cell. Returns a Page.
    `long_reviews` ("cut" or "windows"), `window_overlap` and `max_windows`: src/serve.py's --long-reviews,
    --window-overlap and --max-windows (None: as the training run chose).

    A server this kernel started before is stopped first. Raises RuntimeError, with the server's own
    message, if it does not start within `timeout` seconds."""
    for page in list(_running):
        page.stop()
    log = tempfile.NamedTemporaryFile("w", prefix="serve-", suffix=".log", delete=False)
    model_dir = Path(model_dir).resolve()
    # In Colab the page comes through Colab's proxy, whose Host header is the proxy's name, not this machine's: the
    # server answers to any name there. Its Host check guards against DNS rebinding, a page in the browser reaching
    # a server on the browser's own machine; Colab's runtime is another machine, which the browser reaches only
    # through the proxy. Elsewhere the IFrame asks 127.0.0.1, a name the server answers to.
    command = ([sys.executable, str(SERVE), "--model", str(model_dir), "--port", "0", "--explain"]
               + (["--backend", backend] if backend else [])
               + (["--allowed-host", "*"] if "google.colab" in sys.modules else []))
    reading = {"--long-reviews": long_reviews, "--window-overlap": window_overlap, "--max-windows": max_windows}
    command += [word for flag, value in reading.items() if value is not None for word in (flag, str(value))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    print(f"starting src/serve.py on {model_dir}...", flush=True)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    log.close()
    deadline = time.monotonic() + timeout
    while not (found := STARTED.search(Path(log.name).read_text(errors="replace"))):
        if process.poll() is not None or time.monotonic() > deadline:
            output = Path(log.name).read_text(errors="replace")
            if process.poll() is None:
                process.kill()
                process.wait()
            Path(log.name).unlink(missing_ok=True)
            said = [line for line in output.splitlines() if line.startswith("error:")] or output.splitlines()[-5:]
            raise RuntimeError("the server did not start: " + " ".join(said or ["it printed nothing"]))
        time.sleep(0.2)
    page = Page(process, found.group(1), int(found.group(2)), log.name)
    _running.append(page)
    for line in Path(log.name).read_text(errors="replace").splitlines():
        if line.startswith(("backend ", "explanations: ")):
            print(line)
    health = page.health()
    print(f"serving on port {page.port} ({health['backend']} backend, classes {', '.join(health['classes'])})")
    show(page, height)
    return page


def show(page: Page, height: int = 640) -> None:
    """The page below the cell: through Colab's port proxy in Colab, else an IFrame to the local port."""
    if "google.colab" in sys.modules:
        from google.colab import output

        output.serve_kernel_port_as_iframe(page.port, path="/", height=str(height))
        output.serve_kernel_port_as_window(page.port, path="/", anchor_text="Open the page in a tab of its own")
    else:
        from IPython.display import IFrame, display

        display(IFrame(page.url, width="100%", height=height))
        print(f"The page is at {page.url} (on the machine that runs this kernel).")


@atexit.register
def _stop_all() -> None:  # the kernel is shutting down: do not leave a server behind
    for page in list(_running):
        page.stop(seconds=5)
