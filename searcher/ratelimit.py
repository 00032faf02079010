"""Per-client token buckets: how often the public (search-only) key may be used from one address."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

PUBLIC_RATE = 60  # searches a minute from one client address with the public key, unless told otherwise
# Buckets kept before full ones (clients quiet for a minute or more) are forgotten: a flood of addresses
# cannot grow the table without bound.
MAX_CLIENTS = 10_000


class RateLimiter:
    """At most PER_MINUTE requests a minute from each client, in bursts of up to PER_MINUTE: each client's
    bucket holds PER_MINUTE tokens, refilled at PER_MINUTE / 60 a second, and each request takes one."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"a rate limit needs at least one request a minute, got {per_minute}")
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client: (tokens, when counted)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """0 if CLIENT may go ahead now (taking a token), else the whole seconds until its next token (for a
        Retry-After header)."""
        now = self._clock()
        with self._lock:
            tokens, counted = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - counted) * self.refill_per_s)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return math.ceil((1 - tokens) / self.refill_per_s)
            if len(self._buckets) >= MAX_CLIENTS:
                self._forget_full(now)
            self._buckets[client] = (tokens - 1, now)
            return 0

    def _forget_full(self, now: float) -> None:
        refill_s = self.capacity / self.refill_per_s
        self._buckets = {
            client: (tokens, counted) for client, (tokens, counted) in self._buckets.items() if now - counted < refill_s
        }
