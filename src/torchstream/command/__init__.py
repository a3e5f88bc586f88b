"""The ``torchstream`` command line (``cli``): ``env``, ``launch``, ``inspect``, ``run`` (the
streams of a streams file) and ``serve`` (the service).

May import every package (lazily, so ``torchstream env`` starts fast); nothing imports it.
"""
