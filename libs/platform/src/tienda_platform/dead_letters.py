"""Inspect, replay and purge dead-lettered events.

python -m tienda_platform.dead_letters list|replay|purge [--stream S] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as redis
from faststream.redis import RedisBroker
from redis.exceptions import RedisError
from tienda_contracts.topology import STREAMS, dead_letter_stream

from tienda_platform.consumers import REPLAYED_FOR
from tienda_platform.events import EventEnvelope
from tienda_platform.redis_server import EMBEDDED_REDIS_URL_FILE

if TYPE_CHECKING:
    from tienda_platform.settings import ServiceSettings


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    stream: str
    group: str
    error: str
    time: str
    event_type: str
    event_id: str
    envelope: bytes


class DeadLetters:
    """The dead-letter streams, one per event stream."""

    def __init__(self, client: redis.Redis, broker: RedisBroker) -> None:
        self._client = client
        self._broker = broker

    async def list(self, stream: str) -> list[DeadLetter]:
        letters = []
        entries: Any = await self._client.xrange(dead_letter_stream(stream))
        for entry_id, fields in entries:
            envelope = fields.get(b"envelope", b"")
            try:
                parsed = EventEnvelope.FromString(envelope)
                event_type, event_id = parsed.type, parsed.id
            except Exception:
                event_type, event_id = "?", "?"
            letters.append(
                DeadLetter(
                    entry_id=entry_id.decode(),
                    stream=stream,
                    group=fields[b"group"].decode(),
                    error=fields[b"error"].decode(),
                    time=fields[b"time"].decode(),
                    event_type=event_type,
                    event_id=event_id,
                    envelope=envelope,
                )
            )
        return letters

    async def replay(self, stream: str) -> int:
        """Publish every dead letter again on its stream, for the group that dead-lettered it
        only, and remove it from the dead letters.

        Every group of the stream reads the entry, and the others acknowledge it unhandled
        (tienda_platform.consumers.REPLAYED_FOR): their processed-events record of the event
        may be gone by now (retention), so its id alone would not keep them from doing it
        twice."""
        await self._broker.connect()
        replayed = 0
        for letter in await self.list(stream):
            await self._broker.publish(
                letter.envelope,
                stream=stream,
                headers={
                    "event-type": letter.event_type,
                    "event-id": letter.event_id,
                    REPLAYED_FOR: letter.group,
                },
            )
            await self._client.xdel(dead_letter_stream(stream), letter.entry_id)
            replayed += 1
        return replayed

    async def purge(self, stream: str) -> int:
        """Delete the dead letters of stream; how many there were (counted and deleted in one
        transaction, so none written meanwhile goes uncounted)."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xlen(dead_letter_stream(stream))
            pipe.delete(dead_letter_stream(stream))
            count, _ = await pipe.execute()
        return int(count)


async def _main(args: argparse.Namespace) -> int:
    client = redis.Redis.from_url(args.redis_url)
    broker = RedisBroker(args.redis_url)
    letters = DeadLetters(client, broker)
    streams = [args.stream] if args.stream else list(STREAMS)
    try:
        for stream in streams:
            if args.command == "list":
                for letter in await letters.list(stream):
                    print(
                        f"{letter.stream}\t{letter.entry_id}\t{letter.group}\t{letter.event_type}"
                        f"\t{letter.event_id}\t{letter.time}\t{letter.error}"
                    )
            elif args.command == "replay":
                print(f"{stream}: replayed {await letters.replay(stream)}")
            else:
                print(f"{stream}: purged {await letters.purge(stream)}")
    finally:
        await broker.stop()
        await client.aclose()
    return 0


def default_redis_url(settings: ServiceSettings) -> str:
    """REDIS_URL when it is set; otherwise the embedded Redis of a `make run` on this data
    folder (its URL is in <data folder>/redis.url while it runs), or the settings' default."""
    if "redis_url" in settings.model_fields_set:
        return settings.redis_url
    try:
        return (settings.data_dir / EMBEDDED_REDIS_URL_FILE).read_text().strip()
    except OSError:
        return settings.redis_url


def main() -> int:
    from tienda_platform.settings import ServiceSettings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["list", "replay", "purge"])
    parser.add_argument("--stream", choices=STREAMS)
    parser.add_argument("--redis-url", default=default_redis_url(ServiceSettings()))
    args = parser.parse_args()
    try:
        return asyncio.run(_main(args))
    except (RedisError, OSError, ValueError) as error:  # unreachable, or not a Redis URL
        print(f"cannot reach Redis at {args.redis_url}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
