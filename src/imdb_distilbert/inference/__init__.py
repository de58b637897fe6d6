"""Inference: scoring with a saved predictor through one interface whatever the backend (ktrain, ONNX fp32,
ONNX int8), explanations of what decided a review, and predict.py's command line."""
