"""Spark: scoring a large table of reviews on Apache Spark with the ONNX export."""
