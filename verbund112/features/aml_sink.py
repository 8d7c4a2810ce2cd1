"""Where the AML intake puts a fix: answered 2xx only once no failover can lose it.

A handset sends its AML once. The intake's answer says "stored" when the fix is
on the master; if no replica acknowledged it in time (the replica is down, or
slow), the fix is also kept here and written again (idempotently) until a
replica has it, so the loss of the master right after the answer loses nothing.
A fix the master did not take at all gets 503: the sender retries
(docs/store.md, "Nothing accepted is lost").
"""

from __future__ import annotations

from typing import Protocol

import prometheus_client as prom

from verbund112.features.supervise import Outbox
from verbund112.store.records import AmlFixRecord

AmlWrite = tuple[str, AmlFixRecord, int]  # number, fix, seconds to keep it


class AmlStore(Protocol):
    async def add_aml_fix(self, e164: str, record: AmlFixRecord, ttl_s: int) -> None: ...
    async def claim_aml_nonce(self, nonce: str, ttl_s: int) -> bool: ...


class AmlSink:
    def __init__(self, store: AmlStore, dropped: prom.Counter) -> None:
        self._store = store
        self.outbox: Outbox[AmlWrite] = Outbox("AML fix", self._write, dropped)

    async def add_aml_fix(self, e164: str, record: AmlFixRecord, ttl_s: int) -> None:
        """Raises verbund112.store.StoreError when the master did not take it."""
        await self.outbox.write_now((e164, record, ttl_s))

    async def claim_aml_nonce(self, nonce: str, ttl_s: int) -> bool:
        return await self._store.claim_aml_nonce(nonce, ttl_s)

    async def _write(self, item: AmlWrite) -> None:
        await self._store.add_aml_fix(*item)
