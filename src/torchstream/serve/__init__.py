"""The service (``torchstream serve``): the streams of ``torchstream run`` in one
long-running process that adds, removes and restarts them while it runs, behind a REST API
(``api``, FastAPI on uvicorn), Prometheus metrics (``metrics``), a live preview and result
events per stream (``taps``) and a web page (``static``). ``service`` owns the streams and
the state file; ``policy`` decides what a request may run (plain Python, no GStreamer).

May import GStreamer (through ``gst``), ``streams``, the elements and every core package;
nothing imports it but the command line.
"""
