"""Typed service settings, read once at start-up from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from telematics.ingest import MAX_SAMPLES_PER_BATCH
from telematics.store.provision import as_pricing_role, database_url, pricing_database_url


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: '{raw}' is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}: must be positive, got {value}")
    return value


def retention_days_from_env() -> int:
    """Days raw samples are kept (``UBI_RETENTION_DAYS``): uploads older than that are
    refused and `ubi maintenance` drops them."""
    return _int("UBI_RETENTION_DAYS", 90)


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The pricing side's connection (workbench, underwriter API, provisional repricing);
    # empty means `database_url` as the role ubi_pricing.
    pricing_database_url: str = ""
    pool_max_size: int = 16
    pricing_pool_max_size: int = 8
    pool_timeout_s: float = 5.0
    rate_per_s: float = 50.0
    rate_burst: int = 200
    idempotency_ttl_s: int = 7 * 86_400
    retention_days: int = 90
    max_samples_per_batch: int = MAX_SAMPLES_PER_BATCH
    label_window_days: int = 30
    inactivity_close_s: int = 900
    sweep_interval_s: int = 60
    provisional_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.pricing_database_url:
            object.__setattr__(self, "pricing_database_url",
                               as_pricing_role(self.database_url))

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=database_url(),
            pricing_database_url=pricing_database_url(),
            pool_max_size=_int("UBI_POOL_MAX_SIZE", 16),
            pricing_pool_max_size=_int("UBI_PRICING_POOL_MAX_SIZE", 8),
            rate_per_s=float(_int("UBI_RATE_PER_S", 50)),
            rate_burst=_int("UBI_RATE_BURST", 200),
            idempotency_ttl_s=_int("UBI_IDEMPOTENCY_TTL_S", 7 * 86_400),
            retention_days=retention_days_from_env(),
            max_samples_per_batch=_int("UBI_MAX_SAMPLES_PER_BATCH", MAX_SAMPLES_PER_BATCH),
            label_window_days=_int("UBI_LABEL_WINDOW_DAYS", 30),
            inactivity_close_s=_int("UBI_INACTIVITY_CLOSE_S", 900),
            sweep_interval_s=_int("UBI_SWEEP_INTERVAL_S", 60),
            provisional_interval_s=_int("UBI_PROVISIONAL_INTERVAL_MS", 2000) / 1000.0,
        )
