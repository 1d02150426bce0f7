"""`rtvos serve STREAMS.yaml`: many streams as one service, with an HTTP API (FastAPI on uvicorn) on loopback and,
on the same server, the live view of every stream (``/live/``).

The model runs on the main thread (engine "local": every stream in this process through one model; "ray": the
streams spread over Ray actors, this process writing their outputs), the API on a uvicorn thread. Ctrl-C and
SIGTERM flush every stream's outputs, as `rtvos segment` does; ``--until-done`` ends once every file stream
has ended (batch jobs, tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rtvos.common import stop_reason


def add_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run many streams as a service (HTTP API, /metrics), optionally on Ray")
    p.add_argument("streams", help="streams file (YAML): streams: [{id, source, mask | box | points, out, ...}]")
    p.add_argument("--until-done", action="store_true", help="exit once every file stream has ended")
    p.add_argument("--host", default="127.0.0.1", help="API and live view address (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8321, help="API port (default: 8321; 0: any free port)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: every stream in this process (default); ray: streams on Ray actors (rtvos[ray])")
    p.add_argument("--workers", type=int, default=2, help="ray: number of actors (default: 2)")
    p.add_argument("--address", default=None,
                   help="ray: cluster address (default: start a local one on 127.0.0.1 for this run)")
    p.add_argument("--worker-cpus", type=float, default=1.0, help="ray: CPUs reserved per actor (default: 1)")
    model = p.add_argument_group("model (the streams file may set these too; flags win)")
    model.add_argument("--model", default=None, help="'default', a registered model name, or a checkpoint path")
    model.add_argument("--size", type=int, default=None, help="model input size S, multiple of 64")
    model.add_argument("--device", default=None, help="auto, cpu or cuda:N")
    model.add_argument("--backend", default=None, help="auto, eager, onnx, ...")
    model.add_argument("--threads", type=int, default=None,
                       help="CPU threads per stream step (default: cores / step workers; torch's for Ray's driver)")
    p.add_argument("--quiet", action="store_true", help="no per-stream lines at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtvos import InputError

    try:
        import prometheus_client  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as err:
        raise InputError(f"rtvos serve needs the serve extra: pip install 'rtvos[serve]' ({err})") from None
    from rtvos.serve import HttpServer, LiveHub, Metrics, create_app, is_loopback, load_config

    cfg = load_config(args.streams)
    if not cfg.streams and args.until_done:
        raise InputError(f"{args.streams} lists no streams: nothing for --until-done to wait for")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    opts = dict(model=args.model or cfg.model or "default", size=args.size or cfg.size,
                backend=args.backend or cfg.backend or "auto", device=args.device or cfg.device or "auto")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    engine: Any
    hub = None
    if args.engine == "ray":
        from rtvos.serve import RayEngine

        engine = RayEngine(workers=args.workers, address=args.address, worker_cpus=args.worker_cpus, **opts)
    else:
        from rtvos.serve import LocalEngine

        hub = LiveHub()
        engine = LocalEngine(**opts, hub=hub, threads=args.threads)
    server = None
    try:
        for spec in cfg.streams:
            try:
                engine.add(spec)
            except InputError as err:
                raise InputError(f"stream {spec.id}: {err}") from None
        if args.until_done and not any(not r["live"] for r in engine.status()):
            raise InputError("--until-done: every stream is live (a camera never ends); leave it out for a service")
        metrics = Metrics(engine.status)
        app = create_app(engine, metrics, base=Path(args.streams).parent.absolute(), loopback=is_loopback(args.host),
                         hub=hub)
        server = HttpServer(app, args.host, args.port, name="rtvos-api", what="listen")
        url = server.url.rstrip("/")
        live = f", live view {url}/live/" if hub is not None else ""
        print(f"rtvos serve: {len(cfg.streams)} stream(s) on engine {engine.name}; API {url} (docs {url}/docs, "
              f"metrics {url}/metrics{live})", file=sys.stderr, flush=True)
        try:
            engine.run(until_done=args.until_done, on_frame=metrics.observe)
            reason = "all file streams ended" if args.until_done else "stopped"
        except KeyboardInterrupt as e:  # Ctrl-C, or rtvos.Stopped("SIGTERM") from the CLI: outputs are flushed
            reason = stop_reason(e)
        rows = engine.status()
    finally:
        if hub is not None:
            hub.close()  # ends the MJPEG responses, so the server stops at once
        if server is not None:
            server.close()
        engine.close()
    print(f"rtvos serve: {reason}; {len(rows)} stream(s)", file=sys.stderr)
    if not args.quiet:
        for r in rows:
            err = f", error: {r['error']}" if r.get("error") else ""
            print(f"{r['id']}: {r['state']}, {r['frames']} frames, last frame {r['last_frame']}, fps {r['fps']}, "
                  f"latency p95 {r['latency_p95_ms']} ms, dropped {r['dropped']}, restarts {r['restarts']}{err}")
    return 1 if any(r["state"] == "failed" for r in rows) else 0
