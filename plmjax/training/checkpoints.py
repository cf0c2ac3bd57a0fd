"""Orbax checkpoints of a sharded pytree plus a JSON dict, refusing checkpoints that do not fit the model.

Saves are asynchronous: call `wait()` or `close()` (or use the Checkpointer as a context manager) before
the process exits, or the last checkpoint is lost (orbax's background threads die at interpreter exit,
before any atexit hook could wait for them).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from plmjax.paths import is_remote


class CheckpointMismatchError(ValueError):
    """The checkpoint's parameters do not match the model's (missing, unexpected or mis-shaped)."""


class UnreadableCheckpointError(ValueError):
    """No checkpoint in the directory can be read (truncated or half-written files, missing metadata)."""


def _path_name(path: tuple) -> str:
    """'params/encoder/layers_0/kernel' from a key path of dict keys, sequence indices or attributes."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Leaf path name -> shape; orbax stores dataclass/namedtuple nodes as dicts/lists, so names match."""
    return {_path_name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_compatible(stored: Any, abstract: Any) -> None:
    """Raise CheckpointMismatchError listing every missing, unexpected and mis-shaped leaf."""
    have, want = _shapes(stored), _shapes(abstract)  # listed in tree order: a TrainState's params come first
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    misshaped = [k for k in want if k in have and want[k] != have[k]]
    if not (missing or unexpected or misshaped):
        return
    lines = ["the checkpoint does not fit the model:"]
    lines += [f"  missing from the checkpoint: {k} {want[k]}" for k in missing]
    lines += [f"  unexpected in the checkpoint: {k} {have[k]}" for k in unexpected]
    lines += [f"  mis-shaped: {k}: checkpoint {have[k]} vs model {want[k]}" for k in misshaped]
    raise CheckpointMismatchError("\n".join(lines))


class Checkpointer:
    """Numbered checkpoints in `directory`, keeping the newest `keep`; each holds `state` and JSON `extra`."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = directory if is_remote(directory) else os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            # Handlers up front, so a fresh process can read metadata before any save or restore.
            item_handlers={"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()},
        )

    def save(self, step: int, state: Any, extra: dict | None = None, force: bool = False) -> bool:
        """Start saving `state` (any pytree of arrays, possibly sharded) and `extra`; True if a save began."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra or {}))
        return self._manager.save(step, args=args, force=force)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, step: int, abstract_state: Any) -> Any:
        """The state at `step`, placed with the shardings of `abstract_state` (ShapeDtypeStructs).

        Checks the stored shapes first, so a checkpoint that does not fit fails whole, never half-loaded.
        """
        self._check_step(step)
        stored = self._manager.item_metadata(step)["state"]
        if stored is None:
            raise UnreadableCheckpointError(f"checkpoint step {step} in {self.directory} has no readable state metadata")
        check_compatible(stored.tree, abstract_state)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        return self._manager.restore(step, args=args)["state"]

    def restore_latest(self, abstract_state: Any) -> Any | None:
        """The newest checkpoint that can be read (see `restore`), or None if there is none.

        An unreadable one (truncated, half-written) is skipped with a warning; once an older one restores,
        the unreadable ones are deleted so training can save those steps again. A checkpoint that reads but
        does not fit the model raises CheckpointMismatchError at once.
        """
        unreadable = {}
        for step in reversed(self.all_steps()):
            try:
                state = self.restore(step, abstract_state)
            except CheckpointMismatchError:
                raise
            except Exception as error:  # orbax/tensorstore/json each fail differently on a damaged checkpoint
                logging.warning("checkpoint step %d in %s is unreadable, trying the previous one: %s: %s",
                                step, self.directory, type(error).__name__, error)
                unreadable[step] = error
                continue
            if unreadable:
                for bad in unreadable:
                    self._manager.delete(bad)
                logging.warning("resumed from checkpoint step %d; deleted unreadable step(s) %s", step, sorted(unreadable))
            return state
        if unreadable:
            raise UnreadableCheckpointError(
                f"no checkpoint in {self.directory} can be read; move it away to start afresh:\n"
                + "\n".join(f"  step {step}: {type(e).__name__}: {e}" for step, e in unreadable.items())
            )
        return None

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the `params` of the TrainState saved at `step`, placed like `abstract_params`; checked first."""
        self._check_step(step)
        check_compatible(self._manager.item_metadata(step)["state"].tree["params"], abstract_params)
        item = {"params": abstract_params}
        args = ocp.args.PyTreeRestore(item, ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)
        with ocp.PyTreeCheckpointer() as checkpointer:
            return checkpointer.restore(os.path.join(self.directory, str(step), "state"), args=args)["params"]

    def shapes(self, step: int) -> dict[str, tuple[int, ...]]:
        """Leaf path -> shape of the state saved at `step`, read from its metadata (no arrays are read)."""
        self._check_step(step)
        return _shapes(self._manager.item_metadata(step)["state"].tree)

    def restore_extra(self, step: int) -> dict:
        """The JSON dict saved with `step`."""
        self._check_step(step)
        return self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"]

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_step(self, step: int) -> None:
        if step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {self.all_steps()}"
            )
