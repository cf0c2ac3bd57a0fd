"""Execution choices (config.runtime) that layers read while a model is traced: `with runtime.use(cfg.runtime)`.

They change how a computation runs on a platform (which gradient form XLA:CPU gets, how dropout's random
bits are drawn), never the architecture, so they stay out of ModelConfig and of every export.
"""

from __future__ import annotations

import contextlib
import contextvars

from plmjax.config import RuntimeConfig

_CURRENT: contextvars.ContextVar[RuntimeConfig] = contextvars.ContextVar("plmjax_runtime", default=RuntimeConfig())


def current() -> RuntimeConfig:
    """The runtime settings in force (the defaults outside any `use`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use(settings: RuntimeConfig):
    """Trace models under `settings`; a jitted function keeps what it was traced with."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)
