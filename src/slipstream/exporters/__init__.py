"""Model to files: exporters write a model in another engine's format (CTranslate2, ONNX, GGUF)."""
