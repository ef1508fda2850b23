"""Quantization transforms (model in, model out)."""
