"""tienda_platform.stackcache: the frame-stack chunk of every greenlet (one per awaited
SQLAlchemy call) is reused instead of mapped and unmapped again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import greenlet
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from tienda_platform import stackcache

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def installed() -> None:
    # for the whole process, once: what tienda_platform.runtime.run does for each service
    assert stackcache.install() is True
    assert stackcache.stats()["installed"] is True


def python_call() -> int:
    return sum(range(10))


def test_greenlets_run_one_after_another_reuse_one_chunk() -> None:
    before = stackcache.stats()
    results = [greenlet.greenlet(python_call).switch() for _ in range(500)]
    after = stackcache.stats()

    assert results == [45] * 500
    assert after["reused"] - before["reused"] >= 499
    assert after["mapped"] - before["mapped"] <= 1


def test_no_more_than_128_chunks_are_kept_and_the_rest_are_unmapped() -> None:
    def suspended() -> int:
        greenlet.getcurrent().parent.switch()  # every one alive, holding its chunk
        return python_call()

    alive = [greenlet.greenlet(suspended) for _ in range(300)]
    for g in alive:
        g.switch()
    before = stackcache.stats()
    assert all(g.switch() == 45 for g in alive)
    after = stackcache.stats()

    assert all(g.dead for g in alive)
    assert after["kept"] == 128
    assert after["unmapped"] - before["unmapped"] >= 300 - 128


def test_a_deep_recursion_in_a_greenlet_takes_chunks_and_gives_them_all_back() -> None:
    def depth(n: int) -> int:
        return 0 if n == 0 else 1 + depth(n - 1)

    # hundreds of frames need several chunks, chained; each comes back when its frames return
    before = stackcache.stats()
    assert greenlet.greenlet(lambda: depth(900)).switch() == 900
    after = stackcache.stats()
    assert greenlet.greenlet(python_call).switch() == 45

    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])

    assert delta("reused") + delta("mapped") > 1  # more than one chunk
    # every chunk came back: what is kept grew by what was mapped, less what was unmapped
    assert delta("kept") == delta("mapped") - delta("unmapped")


async def test_an_async_engines_calls_reuse_chunks(tmp_path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.connect() as connection:
            before = stackcache.stats()
            for number in range(100):
                assert (await connection.execute(sa.select(sa.literal(number)))).scalar() == number
            after = stackcache.stats()
    finally:
        await engine.dispose()

    assert after["reused"] - before["reused"] >= 100
    assert after["mapped"] - before["mapped"] <= 2


def test_a_service_process_installs_it_when_its_event_loop_starts() -> None:
    script = textwrap.dedent(
        """
        from tienda_platform import stackcache
        from tienda_platform.runtime import run

        async def main():
            return stackcache.stats()["installed"]

        assert not stackcache.stats()["installed"]
        print(run(main()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.strip() == "True"
