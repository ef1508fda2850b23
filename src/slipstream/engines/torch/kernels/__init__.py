"""CPU kernels the transformers engine swaps into a model: each module says what it replaces, the
arithmetic it keeps, and when the engine takes it (see :class:`~slipstream.engines.options.TransformersOptions`)."""
