"""``tern.config.set(scheduler=...)``: which scheduler ``compute()`` uses when none is named,
as Dask's ``dask.config.set``; as a context manager it applies inside the ``with`` block only.

Schedulers: ``"distributed"`` (the cluster of the default client), ``"sync"`` (one call at a
time in this thread), ``"threads"`` (a thread pool here), ``"processes"`` (a process pool
here). With none set and no client made in this process, delayed values and bags compute on
the thread pool, as Dask's do.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

_settings: Dict[str, Any] = {}

SCHEDULERS = ("distributed", "sync", "threads", "processes")


class set:  # noqa: A001 - Dask's name
    """Set ``scheduler=`` (for ``compute()``); undone when used as a context manager."""

    def __init__(self, scheduler: Optional[str] = None, **others: Any):
        if others:
            raise TypeError(f"tern.config.set takes scheduler= only, not {sorted(others)}")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise ValueError(f"no scheduler {scheduler!r}: one of {', '.join(SCHEDULERS)}")
        self._before = dict(_settings)
        _settings["scheduler"] = scheduler

    def __enter__(self) -> "set":
        return self

    def __exit__(self, *exc: Any) -> None:
        _settings.clear()
        _settings.update(self._before)


def get(name: str, default: Any = None) -> Any:
    return _settings.get(name, default)
