"""Pruning: unstructured (magnitude, Wanda, SparseGPT, 2:4) and structured (layers, channels, heads)."""
