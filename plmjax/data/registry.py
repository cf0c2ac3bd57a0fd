"""The one registry of plmjax's seqio tasks and mixtures: names in, seqio providers and batchers out.

A task is registered as a recipe (`build(name, vocabulary) -> seqio.Task`) rather than a finished
seqio.Task, because a task's output features hold the vocabulary, which each run brings (trained
into its workdir or named by `data.vocab`). `resolve(name, vocabulary)` builds the task for that
vocabulary and adds it to seqio's own registry, replacing one built for another vocabulary, so
`seqio.get_mixture_or_task(name)` works afterwards. This module does not import TensorFlow; the
task modules in TASK_MODULES (which do) are imported on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

# Modules whose import registers tasks; add yours here.
TASK_MODULES = ("plmjax.data.pretraining_tasks", "plmjax.data.downstream_tasks")

Features = dict[str, np.ndarray]


class Batcher(NamedTuple):
    """How a run reads a task: seqio sequence lengths, and the per-batch numpy finish."""

    sequence_length: Mapping[str, int]
    finalize: Callable[[Features, np.random.Generator], Features]  # rows, step-keyed rng -> model features


BatcherFactory = Callable[[Any, Any], Batcher]  # (plmjax Config, vocabulary) -> Batcher


class Resolved(NamedTuple):
    provider: Any  # a seqio.Task or seqio.Mixture, registered in seqio under its (sanitized) name
    batcher: BatcherFactory


@dataclasses.dataclass(frozen=True)
class _Entry:
    build: Callable[..., Any] | None  # tasks: (name, vocab) -> Task; families: (name, vocab, arg) -> Task
    batcher: BatcherFactory
    argument: str = ""  # families: what follows 'prefix:'
    default: str = ""  # families: the argument of the bare 'prefix', if it names a task too
    components: tuple[tuple[str, float], ...] = ()  # mixtures


_TASKS: dict[str, _Entry] = {}
_FAMILIES: dict[str, _Entry] = {}
_MIXTURES: dict[str, _Entry] = {}
_BUILT: dict[str, tuple[Any, Any]] = {}  # seqio name -> (vocabulary, provider)


def register_task(name: str, build: Callable[[str, Any], Any], batcher: BatcherFactory) -> None:
    """Register task `name`: `build(name, vocabulary)` returns its seqio.Task."""
    _add(_TASKS, name, _Entry(build, batcher))


def register_family(prefix: str, build: Callable[[str, Any, str], Any], batcher: BatcherFactory,
                    argument: str, default: str = "") -> None:
    """Register tasks 'prefix:ARG' (e.g. a glob), and 'prefix' = 'prefix:default' if given."""
    _add(_FAMILIES, prefix, _Entry(build, batcher, argument=argument, default=default))


def register_mixture(name: str, components: Sequence[tuple[str, float]]) -> None:
    """Register a mixture of registered tasks, families ('prefix:ARG') or mixtures, with rates."""
    entries = [_lookup(task)[0] for task, _ in components]
    if not entries:
        raise ValueError(f"mixture {name!r} has no components")
    if len({id(entry.batcher) for entry in entries}) != 1:
        raise ValueError(f"mixture {name!r} mixes tasks read in different ways (objectives): {components}")
    _add(_MIXTURES, name, _Entry(None, entries[0].batcher, components=tuple(components)))


def names() -> list[str]:
    """Every task and mixture name, families as 'prefix:ARG', sorted."""
    _load_task_modules()
    families = [f"{prefix}:{entry.argument}" for prefix, entry in _FAMILIES.items()]
    defaults = [prefix for prefix, entry in _FAMILIES.items() if entry.default]
    return sorted([*_TASKS, *families, *defaults, *_MIXTURES])


def resolve(name: str, vocabulary: Any) -> Resolved:
    """The seqio provider of `name` built for `vocabulary` (and registered in seqio), with its batcher."""
    entry, argument = _lookup(name)
    seqio_name = _seqio_name(name)
    built = _BUILT.get(seqio_name)
    if built is None or built[0] != vocabulary:
        provider = _build(seqio_name, entry, argument, vocabulary)
        _BUILT[seqio_name] = (vocabulary, provider)
    return Resolved(_BUILT[seqio_name][1], entry.batcher)


# ---------------------------------------------------------------------- internals


def _add(table: dict[str, _Entry], name: str, entry: _Entry) -> None:
    if name in _TASKS or name in _FAMILIES or name in _MIXTURES:
        raise ValueError(f"a task or mixture named {name!r} is already registered")
    table[name] = entry


def _lookup(name: str) -> tuple[_Entry, str]:
    """The entry registered for `name` and, for a family, its argument; else an error listing names."""
    _load_task_modules()
    prefix, colon, argument = name.partition(":")
    family = _FAMILIES.get(prefix)
    if name in _TASKS or name in _MIXTURES:
        return _TASKS.get(name) or _MIXTURES[name], ""
    if family and (argument or not colon and family.default):
        return family, argument or family.default
    raise ValueError(f"unknown seqio task or mixture {name!r}; registered:\n  " + "\n  ".join(names()))


def _build(seqio_name: str, entry: _Entry, argument: str, vocabulary: Any) -> Any:
    """Build the seqio provider for `vocabulary` and (re-)register it in seqio."""
    import seqio

    registry = seqio.MixtureRegistry if entry.components else seqio.TaskRegistry
    if entry.components:
        provider = seqio.Mixture(
            seqio_name, [(resolve(task, vocabulary).provider, rate) for task, rate in entry.components]
        )
    elif entry.argument:  # a family member 'prefix:ARG'
        provider = entry.build(seqio_name, vocabulary, argument)
    else:
        provider = entry.build(seqio_name, vocabulary)
    if seqio_name in registry.names():
        registry.remove(seqio_name)
    registry.add_provider(seqio_name, provider)
    return provider


def _seqio_name(name: str) -> str:
    """`name` as a valid seqio name: other characters (e.g. of a glob) become '_' plus a hash."""
    clean = re.sub(r"[^\w.:]", "_", name)
    return clean if clean == name else f"{clean}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _load_task_modules() -> None:
    for module in TASK_MODULES:
        importlib.import_module(module)
    importlib.import_module("plmjax.data.pretraining_tasks").register_objective_tasks()  # plug-ins' objectives
