"""Running pipelines from outside: the streams file (``config``), its runner with restart
policies (``runner``) and each stream as a Ray actor (``ray_actors``).

May import GStreamer (through ``gst``), the elements and every core package.
"""
