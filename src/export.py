"""Export a saved predictor to ONNX (fp32 and int8), checked against TensorFlow: `python src/export.py --help`.

The code is in src/imdb_distilbert/export/onnx_export.py; this file only runs it.
"""

from imdb_distilbert.errors import run_cli
from imdb_distilbert.export import onnx_export

if __name__ == "__main__":
    run_cli(onnx_export.main)
