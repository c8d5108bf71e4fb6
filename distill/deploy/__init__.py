"""Deployment: runtimes (PyTorch, ONNX Runtime), ONNX export and its parity check, int8 quantisation, latency
benchmarks, prediction on pictures and video, and model complexity. Uses the students and the shared numerics;
never the training loop or the evaluation."""
