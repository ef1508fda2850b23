"""One module per endpoint group: completions, chat completions, and models/health/metrics."""
