"""vlclip benchmarks.

`python -m benchmarks.run` runs the side-by-side comparisons; `python -m benchmarks.gpu_check` the GPU check.
"""
