"""The transformers (PyTorch) engine's machinery, imported only once that engine runs.

- :mod:`.stepper`: the continuous batch a server drives (sequences join and leave between steps).
- :mod:`.row_cache`: its key/value cache, one row per sequence.
- :mod:`.attention`: its attention paths (grouped decode attention, the fused step's plan).
- :mod:`.kernels`: CPU kernels the engine swaps in: :mod:`.kernels.blas` (float32 products through
  OpenBLAS or oneDNN, a bfloat16 head), :mod:`.kernels.int8_gemm` (W8A8 checkpoints as int8 products),
  :mod:`.kernels.decode_attention` (the decode step's attention as a C loop).
"""
