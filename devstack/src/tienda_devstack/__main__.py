"""`python -m tienda_devstack run` (make run) and `python -m tienda_devstack bench` (make bench)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tienda_devstack.stack import Ports, Stack


def run(data_dir: Path) -> int:
    """Start everything, print where it is, and stop cleanly on Ctrl-C."""
    started = time.monotonic()
    stack = Stack(data_dir=data_dir, ports=Ports.from_env(os.environ))
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack.start()
    try:
        stack.wait_ready(timeout=60)
    except (TimeoutError, RuntimeError) as error:
        print(f"tienda failed to start: {error}", file=sys.stderr)
        stack.stop()
        return 1
    ready_in = time.monotonic() - started
    url = stack.gateway_url
    ports = stack.ports
    print(
        f"""
tienda is ready in {ready_in:.1f}s

  REST gateway   {url}        (OpenAPI UI {url}/docs, spec {url}/openapi.json)
  auth_service   grpc 127.0.0.1:{ports.auth}     metrics http://127.0.0.1:{ports.auth_metrics}/metrics
  product_service grpc 127.0.0.1:{ports.product}    metrics http://127.0.0.1:{ports.product_metrics}/metrics
  order_service  grpc 127.0.0.1:{ports.order}     metrics http://127.0.0.1:{ports.order_metrics}/metrics
  gateway        metrics {url}/metrics

  admin login    {stack.admin.email} / {stack.admin.password}
  redis          {stack.redis_url}{" (embedded)" if stack.redis else ""}
  data and logs  {stack.data_dir}

Press Ctrl-C to stop.""",
        flush=True,
    )
    try:
        while not stopping:
            try:
                stack.raise_if_exited()
            except RuntimeError as error:
                print(f"\n{error}; stopping", file=sys.stderr)
                stack.stop()
                return 1
            time.sleep(0.2)
    finally:
        print("\nstopping tienda ...", flush=True)
        stack.stop()
    print("stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="tienda_devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the whole system (make run)")
    run_parser.add_argument("--data-dir", type=Path, default=Path("data"))
    sub.add_parser("bench", help="run the benchmarks and print their figures (make bench)")
    args = parser.parse_args()
    if args.command == "run":
        return run(args.data_dir)
    from tienda_devstack.bench import main as bench_main

    return bench_main()


if __name__ == "__main__":
    sys.exit(main())
