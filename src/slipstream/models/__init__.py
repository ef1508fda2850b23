"""Where a model comes from: a Hugging Face directory, a hub id, a GGUF file, or a bundled package."""
