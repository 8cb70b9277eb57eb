"""`python -m product_service [serve | migrate]`."""

from __future__ import annotations

import argparse

from loguru import logger
from tienda_platform.grpc_server import run_until_signalled
from tienda_platform.runtime import run, start_observability

from product_service import __version__
from product_service.bootstrap import ProductApp, bootstrap
from product_service.config import Settings, get_settings


async def serve(app: ProductApp) -> None:
    """Serve (relay outbox events, consume order events) until SIGTERM/SIGINT; health is
    NOT_SERVING until `prepare` has finished."""
    await run_until_signalled(
        app.server, prepare=app.prepare, background=app.background, cleanup=app.close
    )


async def migrate_only(app: ProductApp) -> None:
    """Upgrade the database schema and exit."""
    try:
        await app.migrate()
        logger.info("migrations applied")
    finally:
        await app.close()


COMMANDS = {"serve": serve, "migrate": migrate_only}


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    """Parse the command line and run the command."""
    parser = argparse.ArgumentParser(prog="python -m product_service", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=sorted(COMMANDS))
    command = parser.parse_args(argv).command
    settings = settings or get_settings()
    start_observability(
        service_name="product_service", service_version=__version__, settings=settings
    )
    run(_run(command, settings))


async def _run(command: str, settings: Settings) -> None:
    # Built inside the event loop: the grpc.aio server binds itself to the running loop.
    await COMMANDS[command](bootstrap(settings=settings))


if __name__ == "__main__":
    main()
