"""Running a model: Keras prediction, the ONNX export and its runtime, the out-of-distribution guard."""
