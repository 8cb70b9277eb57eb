"""Frame-stack chunks kept for reuse, for the greenlets of SQLAlchemy's asyncio layer.

Since Python 3.11 the frames of Python calls live on a per-thread data stack of 16 KiB
chunks, which the interpreter maps and unmaps through its arena allocator (mmap and munmap).
greenlet gives each greenlet a data stack of its own, and SQLAlchemy's asyncio layer runs
every awaited database operation in a new greenlet: each one mapped a chunk at its first
call and unmapped it at its end, dozens of times per order. `make bench` prints what that
cost and what the cache saves ("greenlet per awaited database call").

install() (tienda_platform.runtime.run calls it before a service's event loop starts) puts
a small cache, written in C (_stackcache.c), in front of the arena allocator: a chunk given
back is kept, up to 128 of them, and handed out again. Nothing else changes.
"""

from __future__ import annotations

from tienda_platform import _stackcache


def install() -> bool:
    """Install the cache for this process (once; later calls do nothing). False on a
    free-threaded build, where it is not installed."""
    return _stackcache.install()


def stats() -> dict[str, int | bool]:
    """`installed`, and since then, counts of chunks `reused`, `mapped` and `unmapped`, and
    how many are `kept` now."""
    return _stackcache.stats()
