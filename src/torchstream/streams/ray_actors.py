"""The streams of a streams file as Ray actors (``torchstream run --ray``): one actor per
stream, each its own worker process (no GStreamer state is forked), restarted by Ray when its
process dies (``max-restarts``), its ``run`` call retried on the new process, which resumes the
stream (see :mod:`torchstream.streams.runner`). Actors are spread over the cluster's nodes, and each
sizes its model's threads to its share of the cluster's CPUs (:func:`cpus_per_actor`). The
driver polls every actor for its status and reports it as a local run does.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict

from torchstream.streams.config import RunSettings, StreamsConfig, StreamSpec


class StreamActor:
    """Runs one stream in a Ray worker process; ``status`` and ``request_stop`` are served
    while ``run`` is busy (the actor is made with more than one concurrent call)."""

    def __init__(self, spec: dict, settings: dict, cpus: int) -> None:
        import ray

        from torchstream.elements import register_all
        from torchstream.model.engines import set_cpu_share
        from torchstream.streams.runner import StreamRunner

        set_cpu_share(cpus)
        register_all()
        self.stop = threading.Event()
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.runner = StreamRunner(StreamSpec(**spec), RunSettings(**settings), self.stop,
                                   resume_first=restarted)

    def run(self) -> dict:
        return self.runner.run()

    def status(self) -> dict:
        return self.runner.snapshot()

    def request_stop(self) -> None:
        self.stop.set()


def connect(address: str, cpus: int | None = None) -> None:
    """``local``: a one-machine Ray cluster started here; else the address of a running one
    (``auto``, ``host:6379``, ``ray://host:10001``)."""
    import ray

    if address == "local":
        ray.init(num_cpus=cpus or os.cpu_count(), include_dashboard=False,
                 logging_level="WARNING", log_to_driver=True)
    else:
        ray.init(address=address, logging_level="WARNING")


def cpus_per_actor(reserved: float, cluster_cpus: float, streams: int) -> int:
    """The CPUs a stream's actor sizes its engines for: those it reserves, else its share of
    the cluster's (at least one). Each actor is a process that would otherwise give its model
    every core of its node: 3 streams on 2 cores then ran 6 inference threads, and mobilenet_v2
    did 0.67-0.72x the frames of the same streams in one process."""
    if reserved > 0:
        return max(1, int(reserved))
    return max(1, int(cluster_cpus // max(1, streams)))


def run_on_ray(config: StreamsConfig, address: str, out=sys.stderr,
               stop: threading.Event | None = None) -> list[dict]:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    from torchstream.streams.runner import StreamStatus, Supervisor, stop_on_signals

    settings = config.run
    connect(address)
    try:
        cpus = cpus_per_actor(settings.ray_cpus_per_stream, ray.cluster_resources().get("CPU", 1),
                              len(config.streams))
        actor_class = ray.remote(StreamActor)
        actors = [actor_class.options(
            max_restarts=settings.max_restarts, max_task_retries=-1, max_concurrency=4,
            num_cpus=settings.ray_cpus_per_stream,
            scheduling_strategy="SPREAD",  # over the nodes, even when no CPU is reserved
        ).remote(asdict(spec), asdict(settings), cpus) for spec in config.streams]
        runs = {actor.run.remote(): i for i, actor in enumerate(actors)}
        # per stream: the latest status seen, the process it came from, and the frames and
        # restarts of its earlier processes
        latest = [asdict(StreamStatus(spec.name)) for spec in config.streams]
        pids = [0] * len(actors)
        carried = [0] * len(actors)
        process_restarts = [0] * len(actors)
        done: set[int] = set()
        stop = stop or threading.Event()
        stop_sent = False
        supervisor = Supervisor(settings, out)

        def merge(i: int, snap: dict) -> dict:
            if pids[i] and snap["pid"] != pids[i]:  # a new process carries on the stream
                carried[i] = latest[i]["frames"]
                process_restarts[i] += 1
            pids[i] = snap["pid"]
            snap = dict(snap, frames=snap["frames"] + carried[i],
                        restarts=snap["restarts"] + process_restarts[i],
                        events=[dict(event, frames=event["frames"] + carried[i],
                                     restarts=event["restarts"] + process_restarts[i])
                                for event in snap["events"]])
            snap["process_restarts"] = process_restarts[i]
            return snap

        with stop_on_signals(stop, out):
            pending = list(runs)
            while pending:
                finished, pending = ray.wait(pending, num_returns=len(pending),
                                             timeout=settings.status_interval)
                for ref in finished:
                    i = runs[ref]
                    done.add(i)
                    try:
                        latest[i] = merge(i, ray.get(ref))
                    except RayActorError as exc:
                        latest[i] = dict(latest[i], state="failed",
                                         error=f"its Ray actor died and was not restarted "
                                               f"({type(exc).__name__})")
                if stop.is_set() and not stop_sent:
                    stop_sent = True
                    for actor in actors:
                        actor.request_stop.remote()
                asks = {i: actors[i].status.remote() for i in range(len(actors))
                        if i not in done}
                for i, ref in asks.items():
                    try:
                        latest[i] = merge(i, ray.get(ref, timeout=settings.status_interval))
                    except (GetTimeoutError, RayActorError):
                        latest[i] = dict(latest[i], state="restarting", fps=0.0,
                                         error="its Ray actor's process is gone; Ray starts "
                                               "a new one")
                supervisor.update(latest)
        supervisor.update(latest, final=True)
        return latest
    finally:
        ray.shutdown()
