"""Accuracy checks, run through the Engine protocol so every engine is scored the same way."""
