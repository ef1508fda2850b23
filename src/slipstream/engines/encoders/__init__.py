"""Engines for encoder models (embeddings and classifiers), behind the Encoder protocol."""
