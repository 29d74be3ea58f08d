"""Seeded random arrays (``dask.array.random``'s names): each chunk draws from its own
stream, made from the seed and the chunk's index, so the same seed and chunks give the same
array wherever and in whatever order the chunks are made. The numbers are not NumPy's for
the same seed (nor are Dask's)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from .core import Array
from .routines import _random

if TYPE_CHECKING:
    from ..client import Client


class RandomState:
    """A seeded source of random arrays; each call draws new numbers."""

    def __init__(self, seed: Optional[int] = None, client: Optional["Client"] = None):
        self._seed = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little")
        self._calls = 0
        self._client = client

    def _next_seed(self) -> int:
        self._calls += 1
        return (self._seed * 1_000_003 + self._calls) % (1 << 64)

    def random(self, size: Any = None, chunks: Any = "auto") -> Array:
        """Floats uniform in [0, 1)."""
        return _random(self._next_seed(), size if size is not None else (), chunks, "uniform", self._client)

    random_sample = random

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
        return self.random(size, chunks) * (high - low) + low

    def standard_normal(self, size: Any = None, chunks: Any = "auto") -> Array:
        return _random(self._next_seed(), size if size is not None else (), chunks, "normal", self._client)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
        return self.standard_normal(size, chunks) * scale + loc


def default_rng(seed: Optional[int] = None) -> RandomState:
    return RandomState(seed)


_global = RandomState()


def seed(value: int) -> None:
    global _global
    _global = RandomState(value)


def random(size: Any = None, chunks: Any = "auto") -> Array:
    return _global.random(size, chunks)


random_sample = random


def uniform(low: float = 0.0, high: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.uniform(low, high, size, chunks)


def standard_normal(size: Any = None, chunks: Any = "auto") -> Array:
    return _global.standard_normal(size, chunks)


def normal(loc: float = 0.0, scale: float = 1.0, size: Any = None, chunks: Any = "auto") -> Array:
    return _global.normal(loc, scale, size, chunks)
