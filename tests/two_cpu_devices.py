"""Run src/train.py with this machine's CPU split into two logical devices, as if it had two GPUs.

    python tests/two_cpu_devices.py --strategy mirrored --data-dir DIR ...   (src/train.py's flags)

TensorFlow's devices can only be configured before it first uses them, so this sets them up and then
runs train.py's main(). train.py's --strategy mirrored then trains one replica on each device.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import tensorflow as tf  # noqa: E402

from imdb_distilbert import compat  # noqa: E402,F401  (before TensorFlow)

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from imdb_distilbert.errors import run_cli  # noqa: E402
from imdb_distilbert.training import recipe  # noqa: E402

if __name__ == "__main__":
    run_cli(recipe.main)
