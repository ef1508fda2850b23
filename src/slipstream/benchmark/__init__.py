"""Speed and memory: latency, throughput, peak memory, size on disk."""
