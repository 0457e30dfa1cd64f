"""Retry decisions as values: given an error and the attempts so far, retry at a time, or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiposter.core.errors import StepError


@dataclass(frozen=True)
class Retry:
    at: datetime
    delay: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float
    max_attempts: int

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Exponential with "equal jitter": half fixed, half random, so retries never synchronise."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)

    def decide(self, attempts: int, error: StepError, now: datetime,
               rng: random.Random | None = None) -> Retry | GiveUp:
        """``attempts``: how many attempts have been made, including the one that just failed."""
        if error.permanent:
            return GiveUp(str(error))
        if attempts >= self.max_attempts:
            return GiveUp(f"gave up after {attempts} attempts: {error}")
        delay = self.delay(attempts, rng)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.cap))
        return Retry(now + timedelta(seconds=delay), delay,
                     f"attempt {attempts} of {self.max_attempts} failed, retrying in {delay:.0f}s: {error}")
