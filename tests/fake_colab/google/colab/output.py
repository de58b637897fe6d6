"""google.colab.output, faked: the two calls that show a port of the kernel's machine in the notebook.

Colab displays JavaScript that asks its proxy for the port's public address and puts it in an iframe (or a
link). Here the same calls display a frame (or link) to http://localhost:PORT/PATH, and, when FAKE_COLAB_OUTPUT_LOG
names a file, add a JSON line to it saying which call was made with which arguments, for the test to check.
"""

import json
import os

from IPython.display import HTML, display


def _record(function, **arguments):
    log = os.environ.get("FAKE_COLAB_OUTPUT_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"function": function, **arguments}) + "\n")


def serve_kernel_port_as_iframe(port, path="/", width="100%", height="400", cache_in_notebook=False):
    _record("serve_kernel_port_as_iframe", port=port, path=path, width=width, height=height,
            cache_in_notebook=cache_in_notebook)
    display(HTML(f'<iframe src="http://localhost:{int(port)}{path}" width="{width}" height="{height}" '
                 'style="border: 0"></iframe>'))


def serve_kernel_port_as_window(port, path="/", anchor_text=None):
    _record("serve_kernel_port_as_window", port=port, path=path, anchor_text=anchor_text)
    text = anchor_text or f"https://localhost:{int(port)}{path}"
    display(HTML(f'<a href="http://localhost:{int(port)}{path}" target="_blank">{text}</a>'))
