"""The Verbund's Redis over TLS, as across a WAN: a Sentinel set of its own (redis-server "jena"
and "gera", sentinels jena, gera, witness), TLS only (``port 0``), client certificates required,
replication and the sentinels' links over TLS too, with throwaway certificates (lab/pki.py).

The real store connects through the TLS sentinels to the TLS master, writes (each write waits
for the replica's acknowledgement, so replication runs over TLS) and reads, follows a kill -9 of
the master and reads what was written before. A service whose certificates do not fit (it does
not trust the Redis CA, or shows a certificate of a CA nobody trusts) is refused: it stays up,
degraded, and says why in one ERROR line and a metric. The session lab stays plain (speed).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import prometheus_client as prom
import pytest

from lab import pki
from lab.processes import LOOPBACK, REDIS_TLS_HOLDERS, RedisSentinelSet
from routing.decision import AmlFix
from routing.location import Position
from tests.support import redis_sets
from tests.unit.test_fastagi import service_settings
from verbund112.service import running
from verbund112.store import RedisSettings, RedisTlsSettings, Store, StoreError
from verbund112.store.records import AmlFixRecord

pytestmark = pytest.mark.lab

NUMBERS = [f"+4915112370{i:03d}" for i in range(5)]
READ_TOKEN = "t-read-0123456789"  # tests/unit/test_fastagi.py service_settings


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pki.SiteCertificate]:
    """The Redis CA's certificates (every node and sentinel, the service) and a stranger's."""
    directory = tmp_path_factory.mktemp("redis-pki")
    ours = pki.redis_pki(directory / "redis", [*REDIS_TLS_HOLDERS, "service-jena"], LOOPBACK)
    stranger = pki.redis_pki(directory / "stranger", ["service-jena"], LOOPBACK)["service-jena"]
    return {**ours, "stranger": stranger}


@pytest.fixture(scope="module")
def tls_set(
    tmp_path_factory: pytest.TempPathFactory, certificates: dict[str, pki.SiteCertificate]
) -> Iterator[RedisSentinelSet]:
    folder = Path(tmp_path_factory.mktemp("tls-sentinel-set"))
    with redis_sets.started(RedisSentinelSet(folder, tls=certificates)) as redis_set:
        yield redis_set


def redis_settings(redis_set: RedisSentinelSet, tls: RedisTlsSettings) -> dict[str, object]:
    return {
        "sentinels": redis_set.sentinel_addresses, "master_name": redis_set.master_name,
        "password": redis_set.password, "sentinel_password": redis_set.sentinel_password, "tls": tls,
    }  # fmt: skip


def tls_with(ca: pki.SiteCertificate, holder: pki.SiteCertificate) -> RedisTlsSettings:
    """Trusting ca's CA, showing holder's certificate."""
    return RedisTlsSettings(ca_file=ca.ca, cert_file=holder.cert, key_file=holder.key)


def answers_plain_redis(port: int) -> bool:
    """Whether the port answers a plain (not TLS) PING: +PONG, or -NOAUTH with a password set."""
    with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        try:
            reply = sock.recv(16)
        except OSError:  # reset: the server took the bytes for a broken TLS handshake
            return False
    return reply.startswith((b"+", b"-"))


async def test_the_store_writes_through_tls_sentinels_and_reads_it_back_after_the_master_is_killed(
    tls_set: RedisSentinelSet, certificates: dict[str, pki.SiteCertificate]
) -> None:
    ours = certificates["service-jena"]
    for node in tls_set.nodes.values():
        with node.client() as client:
            assert client.config_get("port")["port"] == "0"  # no plain port
            assert client.config_get("tls-replication")["tls-replication"] == "yes"
    assert not any(answers_plain_redis(p.port) for p in [*tls_set.nodes.values(), *tls_set.sentinels.values()])

    store = Store(RedisSettings(**redis_settings(tls_set, tls_with(ours, ours))), prom.CollectorRegistry())
    try:
        written = {}
        for number in NUMBERS:
            at = time.time()
            # counts as written once the replica acknowledged it (WAIT): replication runs over TLS
            await store.add_aml_fix(number, AmlFixRecord.of(AmlFix(Position(50.93, 11.59, 10.0, "Circle", "GNSS"),
                                                                   at), at), 3600)  # fmt: skip
            written[number] = at
        for number, at in written.items():
            fix = await store.latest_aml_fix(number)
            assert fix is not None and fix.time == at
        assert store.status()["master"] == f"{LOOPBACK}:{tls_set.nodes['jena'].port}"

        await asyncio.to_thread(tls_set.kill, "jena")
        assert await asyncio.to_thread(tls_set.wait_for_master, "jena") == "gera"
        async with asyncio.timeout(20):  # the store finds the new master through the sentinels by itself
            while True:
                try:
                    fixes = {number: await store.latest_aml_fix(number) for number in NUMBERS}
                    break
                except StoreError:
                    await asyncio.sleep(0.1)  # the master lookup goes on after its timeout
        assert {number: fix.time if fix else None for number, fix in fixes.items()} == written
        assert store.status()["master"] == f"{LOOPBACK}:{tls_set.nodes['gera'].port}"
        assert store.status()["failovers"] == 1
        assert store.tls_refused.collect()[0].samples == []  # no handshake failed on the way
    finally:
        await store.close()


def refused(registry: prom.CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("verbund112_redis_tls_refused_total", {"reason": reason}) or 0


@pytest.mark.parametrize(
    ("trusted", "shown", "reason"),
    [
        ("stranger", "service-jena", "CERTIFICATE_VERIFY_FAILED"),  # the service does not trust the Redis CA
        ("service-jena", "stranger", "TLSV1_ALERT_UNKNOWN_CA"),  # the sentinels do not trust the service's CA
    ],
    ids=["service-without-the-redis-ca", "certificate-of-a-ca-nobody-trusts"],
)
async def test_a_service_whose_certificates_do_not_fit_is_refused_stays_up_degraded_and_says_why(
    tls_set: RedisSentinelSet,
    certificates: dict[str, pki.SiteCertificate],
    caplog: pytest.LogCaptureFixture,
    trusted: str,
    shown: str,
    reason: str,
) -> None:
    tls = tls_with(certificates[trusted], certificates[shown])
    settings = service_settings(redis=redis_settings(tls_set, tls))
    caplog.set_level(logging.INFO)
    async with running(settings) as service:
        async with asyncio.timeout(15):  # the heartbeat asks every redis.heartbeat_interval, each within its timeout
            while refused(service.registry, reason) < 3:  # noqa: ASYNC110 (no event for a heartbeat's failure)
                await asyncio.sleep(0.1)
        base = f"http://{LOOPBACK}:{service.web_port}"
        headers = {"Authorization": f"Bearer {READ_TOKEN}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            async with client.get(f"{base}/healthz") as alive:
                assert alive.status == 200
            async with client.get(f"{base}/readyz") as ready:
                assert (await ready.json())["degraded"] == ["store"]
            async with client.get(f"{base}/api/v1/status", headers=headers) as status:
                redis_status = (await status.json())["redis"]
        assert redis_status["degraded"] is True and redis_status["reachable"] is False
        assert service.registry.get_sample_value("verbund112_redis_up") == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "TLS" in r.getMessage()]
    assert len(errors) == 1, errors  # once per reason, not at every heartbeat
    assert f"[SSL: {reason}]" in errors[0] and "check redis.tls" in errors[0]
