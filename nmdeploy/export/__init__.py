"""ONNX export with a parity check, and the N:M (2:4) layout verifier."""
