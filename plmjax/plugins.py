"""Plug-ins: modules or .py files whose import registers kinds (objectives, attention kernels, masks, ...).

A config names them in `plugins` (or `--plugin` on the command line); they are recorded in config.json,
so every command that rebuilds a run's config from its directory loads them again before reading it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable

from plmjax.config import ConfigError

_FILES: dict[str, object] = {}  # absolute path -> the module it was loaded as


def load(spec: str) -> str:
    """Import plug-in `spec`, a module name (`my_pkg.luna`) or a .py file; returns how config.json records it
    (a file by its absolute path). Each is imported once per process."""
    if not spec.endswith(".py"):
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as error:
            raise ConfigError(f"plug-in {spec!r} cannot be imported: {error}") from None
        return spec
    path = os.path.abspath(spec)
    if path not in _FILES:
        if not os.path.isfile(path):
            raise ConfigError(f"plug-in file {spec!r} does not exist")
        name = f"plmjax_plugin_{os.path.splitext(os.path.basename(path))[0]}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # before running it, so dataclasses and pickling can find the module
        _FILES[path] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del _FILES[path], sys.modules[name]
            raise
    return path


def load_all(specs: Iterable[str]) -> list[str]:
    """Load each plug-in once, in order; their recorded names without repeats."""
    recorded: list[str] = []
    for spec in specs:
        name = load(spec)
        if name not in recorded:
            recorded.append(name)
    return recorded
