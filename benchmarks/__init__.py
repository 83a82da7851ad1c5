"""vlclip benchmarks: `python -m benchmarks.run` (side-by-side comparisons) and `python -m benchmarks.gpu_check`."""
