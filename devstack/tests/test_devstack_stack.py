"""How a Stack with replicas is laid out before anything starts: ports of their own, the
targets that list every replica, and the configurations it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from tienda_devstack.stack import Ports, Stack

pytestmark = pytest.mark.unit

POSTGRES = {
    f"{service}_DATABASE_URL": f"postgresql+asyncpg://tienda@127.0.0.1:5432/{service.lower()}"
    for service in ("AUTH", "PRODUCT", "ORDER")
}


def test_replicas_get_ports_of_their_own_and_callers_dial_every_replica(tmp_path: Path) -> None:
    ports = Ports.free()
    stack = Stack(data_dir=tmp_path, ports=ports, env=POSTGRES, replicas={"order_service": 3})
    assert list(stack.extra_replicas) == ["order_service-2", "order_service-3"]
    assert len(set(stack.ports_in_use)) == len(stack.ports_in_use) == 7 + 2 * 2
    grpc_ports = stack.grpc_ports("order_service")
    assert grpc_ports[0] == ports.order and len(grpc_ports) == 3
    env = stack.child_env()
    assert env["ORDER_GRPC_TARGET"] == "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in grpc_ports)
    # a service without replicas is dialled at its one address
    assert env["PRODUCT_GRPC_TARGET"] == f"127.0.0.1:{ports.product}"
    assert stack.metrics_port("order_service") == ports.order_metrics
    assert stack.metrics_port("order_service-2") == stack.extra_replicas["order_service-2"][2]


def test_replicas_need_postgresql_and_a_grpc_service(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ORDER_DATABASE_URL"):
        Stack(
            data_dir=tmp_path,
            ports=Ports.free(),
            env={"ORDER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'order.db'}"},
            replicas={"order_service": 2},
        )
    with pytest.raises(ValueError, match="replicas of gateway"):
        Stack(data_dir=tmp_path, ports=Ports.free(), env=POSTGRES, replicas={"gateway": 2})
