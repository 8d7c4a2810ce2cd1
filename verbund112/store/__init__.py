"""The Verbund's shared state in Redis: the only package that talks to Redis (see keys.py for the table)."""

from verbund112.store.redis_store import (
    AbandonedChanged,
    AmlUpdated,
    Announcement,
    CardData,
    NotReplicated,
    PartnerReport,
    RedisSettings,
    RedisTlsSettings,
    Resubscribed,
    Store,
    StoreError,
    StoreSetupError,
    being_cancelled,
    tls_file_problems,
)

__all__ = [
    "AbandonedChanged",
    "AmlUpdated",
    "Announcement",
    "CardData",
    "NotReplicated",
    "PartnerReport",
    "RedisSettings",
    "RedisTlsSettings",
    "Resubscribed",
    "Store",
    "StoreError",
    "StoreSetupError",
    "being_cancelled",
    "tls_file_problems",
]
