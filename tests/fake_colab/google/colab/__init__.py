"""A stand-in for Colab's google.colab (see tests/fake_colab/README.md)."""

from google.colab import drive, files, output  # noqa: F401
