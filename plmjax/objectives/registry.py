"""The objectives a model trains and the regularizers that add to their loss: each registered once, here.

An `Objective` carries everything a run needs for it: its typed keys (`objective.<name>.*`), the model task
that trains it, its feature spec, the host-side batch builder over a corpus and the seqio batcher over
packed windows. A new objective is one file that calls `register`; nothing else names it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from plmjax.config import Config, ConfigError, register_options

Features = dict[str, np.ndarray]
Finish = Callable[[Features, np.random.Generator], Features]  # a batch of rows, the step's generator -> features
FeatureSpec = dict[str, tuple[tuple[int, ...], Any]]  # feature -> (per-example shape, dtype)


@dataclasses.dataclass(frozen=True)
class Objective:
    """One pretraining objective, from text to loss."""

    name: str
    arch: str  # the model.arch it trains
    options: type  # a dataclass with defaults: the keys objective.<name>.*
    model_task: Callable[[Config], Any]  # config -> the ModelTask (network plus loss) that trains it
    features: Callable[[Config], FeatureSpec]  # the model-ready features of one example
    # (config, tokenizer, documents, generator) -> (fixed examples, the per-step finish): the corpus pipeline
    examples: Callable[[Config, Any, Sequence[str], np.random.Generator], tuple[Features, Finish]]
    batcher: Callable[[Config, Any], Any] | None = None  # (config, vocabulary) -> data.registry.Batcher for seqio
    seqio_suffix: str = ""  # seqio tasks pydoc_<suffix>, c4_<suffix>, text_files_<suffix>:GLOB ("": the name)
    check: Callable[[Config], None] | None = None  # raises a ConfigError for a config it cannot train

    @property
    def seqio_name(self) -> str:
        return self.seqio_suffix or self.name


@dataclasses.dataclass(frozen=True)
class Regularizer:
    """A term added to any objective's loss; `wrap(task, options)` returns the model task that adds it."""

    name: str
    options: type  # the keys objective.<name>.* (e.g. a weight)
    wrap: Callable[[Any, Any], Any]


OBJECTIVES: dict[str, Objective] = {}
REGULARIZERS: dict[str, Regularizer] = {}


def register(objective: Objective) -> Objective:
    """Make `objective` trainable by `objective.kind=<name>`; its options become objective.<name>.* keys."""
    _claim(objective.name)
    register_options("objective", objective.name, objective.options)
    OBJECTIVES[objective.name] = objective
    return objective


def register_regularizer(regularizer: Regularizer) -> Regularizer:
    """Make `regularizer` selectable in objective.regularizers; its options become objective.<name>.* keys."""
    _claim(regularizer.name)
    register_options("objective", regularizer.name, regularizer.options)
    REGULARIZERS[regularizer.name] = regularizer
    return regularizer


def _claim(name: str) -> None:
    if name in OBJECTIVES or name in REGULARIZERS or name in ("kind", "regularizers", "options"):
        raise ValueError(f"an objective or regularizer named {name!r} is already registered")


def for_config(config: Config) -> Objective:
    """The objective config.objective.kind names, checked against the model's architecture."""
    objective = OBJECTIVES.get(config.objective.kind)
    if objective is None:
        raise ConfigError(f"objective.kind={config.objective.kind!r} is not one of {', '.join(OBJECTIVES)}")
    if objective.arch != config.model.arch:
        pairs = ", ".join(f"{o.arch}+{o.name}" for o in OBJECTIVES.values())
        raise ConfigError(f"model.arch={config.model.arch!r} cannot train objective.kind={objective.name!r}; "
                          f"supported: {pairs}")
    return objective


def options(config: Config, name: str | None = None) -> Any:
    """The typed options of objective (or regularizer) `name`, by default config.objective.kind's."""
    return config.objective.options[name or config.objective.kind]
