"""`python -m order_service` serves order.v1.OrderService; `... migrate` upgrades the database."""

from __future__ import annotations

import argparse

from tienda_platform.grpc_server import run_until_signalled
from tienda_platform.runtime import run, start_observability

from order_service import __version__
from order_service.bootstrap import bootstrap
from order_service.config import Settings, get_settings


async def migrate_database(settings: Settings) -> None:
    """Upgrade the database to the newest schema, creating its SQLite folder if needed."""
    app = bootstrap(settings=settings)
    try:
        await app.migrate()
    finally:
        await app.cleanup()


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; migrations and the consumer groups are ready before
    health turns SERVING; the outbox relay and the saga worker run in the background."""
    app = bootstrap(settings=settings)
    server = app.grpc_server()
    await run_until_signalled(
        server, prepare=app.prepare, background=app.background, cleanup=app.cleanup
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="python -m order_service", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)
    settings = get_settings()
    start_observability(
        service_name="order_service", service_version=__version__, settings=settings
    )
    if args.command == "migrate":
        run(migrate_database(settings))
    else:
        run(serve(settings))


if __name__ == "__main__":
    main()
