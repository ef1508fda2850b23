"""Engines for encoder-decoder (seq2seq) models: Marian, T5, BART and their kin, behind the Engine protocol.

A prompt is the source sentence's token ids (the model's tokenizer, special tokens included); a completion
is the target's tokens. A greedy request searches ``beam_size`` beams (an engine option, 1 by default).
"""
