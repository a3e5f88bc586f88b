"""Running pipelines from outside: the streams file (``config``), its runner with restart
policies (``runner``), each stream as a Ray actor (``ray_actors``) and the ``torchstream``
command line (``cli``).

May import GStreamer (through ``gst``), the elements and every core package.
"""
