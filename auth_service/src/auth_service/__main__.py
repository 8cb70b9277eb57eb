"""`python -m auth_service [serve | migrate | rotate-keys]`."""

from __future__ import annotations

import argparse

from loguru import logger
from tienda_platform.grpc_server import run_until_signalled
from tienda_platform.runtime import run, start_observability

from auth_service import __version__
from auth_service.bootstrap import AuthApp, bootstrap
from auth_service.config import Settings, get_settings
from auth_service.service_layer import signing_keys


async def serve(app: AuthApp) -> None:
    """Serve (and relay outbox events) until SIGTERM/SIGINT; NOT_SERVING until prepared."""
    await run_until_signalled(
        app.server, prepare=app.prepare, background=app.background, cleanup=app.close
    )


async def migrate_only(app: AuthApp) -> None:
    """Upgrade the database schema and exit."""
    try:
        await app.migrate()
        logger.info("migrations applied")
    finally:
        await app.close()


async def rotate_keys(app: AuthApp) -> None:
    """Add a new active signing key; older public keys stay in the JWKS."""
    try:
        await app.migrate()
        await signing_keys.rotate_signing_key(deps=app.deps)
    finally:
        await app.close()


COMMANDS = {"serve": serve, "migrate": migrate_only, "rotate-keys": rotate_keys}


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    """Parse the command line and run the command."""
    parser = argparse.ArgumentParser(prog="python -m auth_service", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=sorted(COMMANDS))
    command = parser.parse_args(argv).command
    settings = settings or get_settings()
    start_observability(service_name="auth_service", service_version=__version__, settings=settings)
    run(_run(command, settings))


async def _run(command: str, settings: Settings) -> None:
    # Built inside the event loop: the grpc.aio server binds itself to the running loop.
    await COMMANDS[command](bootstrap(settings=settings))


if __name__ == "__main__":
    main()
