"""INT8 quantisation with TensorRT-legal Q/DQ: calibration sets, readers, the lint, evaluation."""
