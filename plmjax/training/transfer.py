"""Starting a model from a base checkpoint: every parameter the two share by path comes from the checkpoint,
the model's other parameters keep their fresh initialisation, the checkpoint's others are dropped.

So a fine-tuning model (encoder, pooler, classifier) starts from a pretrained one (encoder, pooler, mlm_head,
nsp_head), and a model with parameters added inside its layers (adapters, low-rank deltas, prefixes) from the
model without them. A parameter both have with different shapes is an error, as is a checkpoint that shares
nothing. The `Transfer` report says what was loaded, what is new and what was dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax

from plmjax.training.checkpoints import CheckpointMismatchError, check_compatible
from plmjax.training.trainable import leaves, merge, path_name, unflatten

SHOWN = 8  # module paths listed per part of the report


@dataclasses.dataclass
class Transfer:
    """Leaf paths of a start from `source`: loaded from it, new (fresh), and in it but not in the model."""

    source: str
    loaded: list[str]
    new: list[str]
    dropped: list[str]

    def text(self) -> str:
        def modules(paths: list[str]) -> str:
            names = list(dict.fromkeys(p.rsplit("/", 1)[0] for p in paths))
            more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
            return ", ".join(names[:SHOWN]) + more if names else "nothing"

        return (f"init_from {self.source}: loaded {len(self.loaded)} parameters ({modules(self.loaded)}); "
                f"new, freshly initialised: {len(self.new)} ({modules(self.new)}); "
                f"dropped from the checkpoint: {len(self.dropped)} ({modules(self.dropped)})")


def pretrained_params(directory: str, fresh: Any) -> tuple[Any, Transfer]:
    """`fresh` (placed params) with every leaf the checkpoint in `directory` also has replaced by its value."""
    from plmjax.convert import directory as checkpoint_dir

    stored = leaves(checkpoint_dir.load(directory).params)
    want = leaves(fresh)
    shared = [p for p in want if p in stored]
    if not shared:
        raise ValueError(f"the checkpoint in {directory!r} shares no parameter with this model: it has "
                         f"{sorted({p[0] for p in stored})}, the model {sorted({p[0] for p in want})}")
    check_compatible({path_name(p): stored[p] for p in shared}, {path_name(p): want[p] for p in shared})
    placed = {p: jax.device_put(stored[p], want[p].sharding) for p in shared}
    report = Transfer(directory, [path_name(p) for p in shared], [path_name(p) for p in want if p not in stored],
                      [path_name(p) for p in stored if p not in want])
    return merge(fresh, unflatten(placed)), report


def initial_params(directory: str, abstract: Any, fresh: Callable[[], Any]) -> tuple[Any, Transfer]:
    """A model's parameters started from `directory`: restored straight into their shards when the checkpoint
    fits the model exactly, else mapped leaf by leaf onto `fresh()` (see `pretrained_params`)."""
    from plmjax.convert import directory as checkpoint_dir

    try:
        params, _ = checkpoint_dir.restore_params(directory, abstract)
    except CheckpointMismatchError:
        params, report = pretrained_params(directory, fresh())
    else:
        report = Transfer(directory, [path_name(p) for p in leaves(abstract)], [], [])
    (logging.warning if report.new or report.dropped else logging.info)("%s", report.text())
    return params, report


def start_params(config, abstract: Any, fresh: Callable[[], Any]) -> Any:
    """A run's parameters before any step: train.init_from's mapped onto the model, else `fresh()`."""
    if not config.train.init_from:
        return fresh()
    return initial_params(config.train.init_from, abstract, fresh)[0]


def base_record(config, params: Any, paths) -> dict:
    """What a trainable-only checkpoint records of the frozen parameters it was trained on."""
    from plmjax.training import trainable

    return {"init_from": config.train.init_from, "seed": config.train.seed,
            "fingerprint": trainable.fingerprint(trainable.frozen(params, paths))}


def check_base(recorded: dict | None, expected: dict, where: str) -> None:
    """Refuse to put trainable-only parameters (`where`) on a base other than the one they were trained on."""
    recorded = recorded or {}
    if recorded.get("fingerprint") != expected["fingerprint"]:
        raise CheckpointMismatchError(
            f"{where} holds only the trainable parameters and was trained on another base: {_describe(recorded)} "
            f"(fingerprint {recorded.get('fingerprint')}), not {_describe(expected)} (fingerprint "
            f"{expected['fingerprint']}); set train.init_from (and train.seed) to the base it was trained on"
        )


def _describe(base: dict) -> str:
    if base.get("init_from"):
        return f"init_from {base['init_from']!r}"
    return f"a fresh initialisation (seed {base.get('seed')})"
