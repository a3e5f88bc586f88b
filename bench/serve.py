"""The service under load: two streams (bikes.mp4 and cockatoo.mp4 through mobilenet_v2,
looped, at full speed) measured three ways, each in its own process, interleaved:

- ``run``: ``torchstream run`` on the same streams file (no server at all);
- ``serve``: ``torchstream serve`` on it, nobody watching (one status read at each end);
- ``serve+load``: the same while 50 clients poll ``/api/streams`` once a second and 5 viewers
  watch a stream's ``video.mjpeg`` (the clients run in this process, on the same cores).

    .venv/bin/python -m bench.serve [--seconds 60] [--repeats 2] [--clients 50]
                                    [--viewers 5] [--json FILE]

Each stream's fps is read from the status file (frames and its ``time``) after a warm-up
(the model loaded, the engine chosen), over ``--seconds``; the CPU seconds of the process
(utime + stime from /proc) over the same window give CPU ms per frame. Medians over the
repeats; ratios against ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.models import BIKES, COCKATOO, IMAGENET_LABELS, MOBILENET_V2_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
TORCHSTREAM = REPO / ".venv" / "bin" / "torchstream"
WARMUP = 15.0  # s after the first frame of every stream
SIDES = ("run", "serve", "serve+load")


def streams_file(folder: Path) -> Path:
    path = folder / "streams.toml"
    path.write_text(
        f'[run]\nstatus-file = "{folder / "status.json"}"\nstatus-interval = 0.5\n'
        '[defaults]\nelement = "video_inference"\n'
        'properties = { model = "torchvision.models.mobilenet_v2", '
        f'model-weights = "{MOBILENET_V2_WEIGHTS}", labels-file = "{IMAGENET_LABELS}" }}\n'
        f'[[stream]]\nname = "bikes"\nsource = "{BIKES}"\nloop = true\n'
        f'[[stream]]\nname = "cockatoo"\nsource = "{COCKATOO}"\nloop = true\n')
    return path


def read_status(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    """Pollers and MJPEG viewers on one event loop in a thread of this process."""

    def __init__(self, url: str, clients: int, viewers: int) -> None:
        self.url, self.clients, self.viewers = url, clients, viewers
        self.answered = self.failed = self.jpegs = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _poll(self, client, offset: float) -> None:
        await asyncio.sleep(offset)
        while not self.stop.is_set():
            try:
                answer = await client.get("/api/streams")
                ok = answer.status_code == 200 and len(answer.json()) == 2
            except Exception:  # noqa: BLE001 - counted as a failure
                ok = False
            self.answered += ok
            self.failed += not ok
            await asyncio.sleep(1.0)

    async def _watch(self, client, name: str) -> None:
        try:
            async with client.stream("GET", f"/api/streams/{name}/video.mjpeg") as answer:
                async for chunk in answer.aiter_bytes():
                    self.jpegs += chunk.count(b"Content-Type: image/jpeg")
                    if self.stop.is_set():
                        break
        except Exception:  # noqa: BLE001 - counted as a failure
            self.failed += 1

    async def _main(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.clients + self.viewers + 5)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:
            tasks = [asyncio.create_task(self._poll(client, i / self.clients))
                     for i in range(self.clients)]
            tasks += [asyncio.create_task(self._watch(client, ("bikes", "cockatoo")[i % 2]))
                      for i in range(self.viewers)]
            while not self.stop.is_set():
                await asyncio.sleep(0.2)
            await asyncio.gather(*tasks, return_exceptions=True)


def measure(side: str, seconds: float, clients: int, viewers: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    streams = streams_file(folder)
    if side == "run":
        command = [str(TORCHSTREAM), "run", str(streams)]
    else:
        command = [str(TORCHSTREAM), "serve", str(streams), "--port", "0", "--out-dir",
                   str(folder / "out")]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    url, lines = None, []

    def read() -> None:
        nonlocal url
        for line in process.stderr:
            lines.append(line)
            if "serving" in line:
                url = line.split(" on ")[1].split()[0].rstrip("/")

    threading.Thread(target=read, daemon=True).start()
    load = None
    try:
        deadline = time.monotonic() + 180
        while True:
            status = read_status(folder)
            if status and all(s["frames"] > 0 for s in status["streams"]) \
                    and len(status["streams"]) == 2:
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{side}: the streams did not start:\n"
                                   + "".join(lines[-30:]))
            time.sleep(0.2)
        if side == "serve+load":
            load = Load(url, clients, viewers)
            load.thread.start()
        time.sleep(WARMUP)
        first, cpu_first = read_status(folder), cpu_seconds(process.pid)
        clients_first = time.process_time()
        time.sleep(seconds)
        last, cpu_last = read_status(folder), cpu_seconds(process.pid)
        clients_cpu = time.process_time() - clients_first
    finally:
        if load is not None:
            load.stop.set()
            load.thread.join(10)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    span = last["time"] - first["time"]
    fps = {b["name"]: (b["frames"] - a["frames"]) / span
           for a, b in zip(first["streams"], last["streams"], strict=True)}
    frames = sum(b["frames"] - a["frames"]
                 for a, b in zip(first["streams"], last["streams"], strict=True))
    result = {"side": side, "fps": fps, "total_fps": sum(fps.values()),
              "cpu_ms_per_frame": 1000 * (cpu_last - cpu_first) / max(frames, 1)}
    if load is not None:
        result.update(answered=load.answered, failed=load.failed, jpegs=load.jpegs,
                      client_cpu_share=clients_cpu / span)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES:
            result = measure(side, args.seconds, args.clients, args.viewers)
            runs[side].append(result)
            extra = (f"  {result['answered']} polls answered, {result['failed']} failed, "
                     f"{result['jpegs']} MJPEG frames; the clients took "
                     f"{result['client_cpu_share']:.2f} of a core" if "answered" in result
                     else "")
            print(f"[{repeat + 1}/{args.repeats}] {side:11s} "
                  + " ".join(f"{k} {v:5.1f} fps" for k, v in result["fps"].items())
                  + f"  {result['cpu_ms_per_frame']:.1f} CPU ms/frame{extra}", flush=True)
    base = statistics.median(r["total_fps"] for r in runs["run"])
    print(f"\nmedians over {args.repeats} runs of {args.seconds:g} s, 2 streams "
          f"(mobilenet_v2, full speed):")
    print(f"{'side':12s} {'bikes':>7s} {'cockatoo':>9s} {'total':>7s} {'vs run':>7s} "
          f"{'CPU ms/frame':>13s}")
    for side in SIDES:
        rows = runs[side]
        med = {name: statistics.median(r["fps"][name] for r in rows)
               for name in ("bikes", "cockatoo")}
        total = statistics.median(r["total_fps"] for r in rows)
        cpu = statistics.median(r["cpu_ms_per_frame"] for r in rows)
        print(f"{side:12s} {med['bikes']:7.1f} {med['cockatoo']:9.1f} {total:7.1f} "
              f"{total / base:7.2f} {cpu:13.1f}")
    loaded = runs["serve+load"]
    print(f"load: {sum(r['answered'] for r in loaded)} polls answered, "
          f"{sum(r['failed'] for r in loaded)} failed, "
          f"{sum(r['jpegs'] for r in loaded)} MJPEG frames received")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
