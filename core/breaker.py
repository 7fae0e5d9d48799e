"""Circuit breakers per upstream provider: fail fast while a provider keeps failing.

`CircuitBreakers(threshold, cooldown_s, exclude=...)` holds one breaker per provider name for the
life of the process (purgatory's, as the model gateway's): a breaker opens after `threshold`
consecutive failures, refuses calls without a request for `cooldown_s` (`CircuitOpen`, with the
time left), then lets one probe through (half-open) and closes when it succeeds. Exceptions in
`exclude` (an upstream that answered, e.g. a 4xx) do not count against the provider's health.

    breakers = CircuitBreakers(threshold=5, cooldown_s=30, exclude=[Rejected])
    async with breakers.guard("carrier"):
        response = await client.get(...)

Nothing here retries: retrying is Temporal's job, after `CircuitOpen.retry_after`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

__all__ = ["CircuitBreakers", "CircuitOpen"]


class CircuitOpen(Exception):
    """The provider's circuit is open: no call was made."""

    def __init__(self, provider: str, retry_after: float) -> None:
        super().__init__(f"{provider}: circuit open, {retry_after:.1f} s of cooldown left")
        self.provider = provider
        self.retry_after = retry_after


class CircuitBreakers:
    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        exclude: Sequence[type[BaseException]] = (),
    ) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("threshold must be >= 1 and cooldown_s > 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=cooldown_s,
            exclude=[*exclude, asyncio.CancelledError],
        )

    @asynccontextmanager
    async def guard(self, provider: str) -> AsyncIterator[None]:
        """Run the body through `provider`'s breaker; `CircuitOpen` when it is open."""
        breaker = await self._factory.get_breaker(provider)
        try:
            async with breaker:
                yield
        except OpenedState as opened:
            remaining = opened.opened_at + self.cooldown_s - time.time()
            raise CircuitOpen(provider, max(0.0, remaining)) from None

    async def state(self, provider: str) -> str:
        """`closed`, `opened` or `half-opened`."""
        breaker = await self._factory.get_breaker(provider)
        return str(breaker.context.state)
