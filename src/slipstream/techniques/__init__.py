"""Techniques: frozen, typed configs, each registered with the function that applies it.

A *transform* maps a model to a model (quantize, prune, distill); an *export* maps a model to files
in another format (CTranslate2, ONNX, GGUF). See :mod:`slipstream.techniques.registry`.
"""
