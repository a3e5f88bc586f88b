"""torchstream's benchmark suite: the bare model, decoding alone, a plain OpenCV + PyTorch
loop, the expert's OpenCV + OpenVINO loops and the torchstream pipelines on the same video,
measured in one interleaved run.

Run ``python -m bench`` (or ``make bench``); ``python -m bench --help`` lists the options and
docs/benchmarks.md explains the method and the figures.
"""
