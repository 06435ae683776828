"""A per-key request rate limit at the gateway: a token bucket for each API key (each client
address for calls without one), on /api/* only. Over the limit: 429 with Retry-After.

RLHF_GATEWAY_RATE_LIMIT (requests a second, sustained; 0 turns the limit off) and
RLHF_GATEWAY_RATE_BURST (how many may come at once) configure it. One gateway process keeps its
own buckets: with N gateways behind a balancer a key gets up to N times the limit."""

import hashlib
import math
import time
from dataclasses import dataclass

from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.http import error


class RateLimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    rlhf_gateway_rate_limit: float = 50.0
    rlhf_gateway_rate_burst: int = 200


@dataclass
class Bucket:
    tokens: float
    at: float


class TokenBuckets:
    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, Bucket] = {}

    def take(self, key: str, now: float) -> float:
        """0 when a request may go now; otherwise the seconds until it may."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.MAX_KEYS:
                self._forget_full(now)
            bucket = self.buckets[key] = Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Buckets that have refilled hold nothing worth keeping."""
        refill = self.burst / self.rate
        self.buckets = {k: b for k, b in self.buckets.items() if now - b.at < refill}


def caller_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return "key:" + hashlib.sha256(value).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: RateLimitSettings | None = None):
        self.app = app
        settings = settings or RateLimitSettings()
        rate, burst = settings.rlhf_gateway_rate_limit, max(1, settings.rlhf_gateway_rate_burst)
        self.buckets = TokenBuckets(rate, burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        wait = self.buckets.take(caller_of(scope), time.monotonic())
        if wait <= 0:
            return await self.app(scope, receive, send)
        retry_after = max(1, math.ceil(wait))
        response = error(
            429, "rate_limited",
            f"too many requests for this key: at most {self.buckets.rate:g}/s (bursts of {self.buckets.burst}); "
            f"retry in {retry_after} s",
        )
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)
