"""Export: the predictor as ONNX (fp32, and int8 with a checked agreement) for scoring without TensorFlow,
and as a Hugging Face folder with its model card."""
