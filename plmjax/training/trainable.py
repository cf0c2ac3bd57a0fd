"""Which parameters train: a mask that gradients, optimizer state and checkpoints all respect.

`train.trainable` is "" (everything) or comma-separated items, each a name in MASKS (a function of the
parameter tree returning a tree of bools, as optax masks are) or a regular expression searched in a leaf's
path ("encoder/stack/layers_0/mlp/wi/kernel"). The trainable part of a parameter tree is the nested dict
of its trainable leaves alone (`select`); `merge` writes such a part back into a whole tree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plmjax.config import ConfigError, names

Paths = frozenset  # of leaf paths, each a tuple of dict keys
MASKS: dict[str, Callable[[Any], Any]] = {}


def register_mask(name: str, mask: Callable[[Any], Any]) -> None:
    """Make `mask(params) -> tree of bools` selectable by name in train.trainable."""
    if name in MASKS:
        raise ValueError(f"a trainable mask named {name!r} is already registered")
    MASKS[name] = mask


def leaves(tree) -> dict[tuple[str, ...], Any]:
    """Leaf path (dict keys) -> leaf of a tree of nested dicts, in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}


def path_name(path: tuple[str, ...]) -> str:
    return "/".join(path)


def trainable_paths(spec: str, params) -> Paths | None:
    """The paths of the leaves `spec` makes trainable (None: every leaf); an error when it selects none."""
    items = names(spec)
    if not items:
        return None
    flat = leaves(params)
    chosen: set[tuple[str, ...]] = set()
    for item in items:
        if item in MASKS:
            chosen |= {p for p, on in leaves(MASKS[item](params)).items() if on}
            continue
        try:
            pattern = re.compile(item)
        except re.error as error:
            raise ConfigError(f"train.trainable item {item!r} is neither a registered mask "
                              f"({', '.join(MASKS) or 'none registered'}) nor a regular expression: {error}") from None
        matched = {p for p in flat if pattern.search(path_name(p))}
        if not matched:
            raise ConfigError(f"train.trainable item {item!r} matches no parameter; paths look like "
                              f"{path_name(next(iter(flat)))!r} (registered masks: {', '.join(MASKS) or 'none'})")
        chosen |= matched
    return Paths(chosen)


def unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def select(tree, paths: Paths | None):
    """The nested dict of `tree`'s leaves at `paths` (the whole tree when paths is None)."""
    if paths is None:
        return tree
    return unflatten({p: leaf for p, leaf in leaves(tree).items() if p in paths})


def frozen(tree, paths: Paths | None):
    """The nested dict of the leaves that do not train (empty when everything trains)."""
    if paths is None:
        return {}
    return unflatten({p: leaf for p, leaf in leaves(tree).items() if p not in paths})


def merge(tree, part):
    """`tree` with each leaf that `part` (a nested dict of some of its leaves) has replaced by part's."""
    if jax.tree.structure(part) == jax.tree.structure(tree):  # everything trains
        return part
    replacements = leaves(part)
    return unflatten({p: replacements.get(p, leaf) for p, leaf in leaves(tree).items()})


def _words(x):
    """Per leaf: the sums of its float32 bit patterns, plain and index-weighted, modulo 2**32: exact and
    independent of how the leaf is sharded, since integer sums do not depend on their order."""
    words = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32).reshape(-1)
    weights = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)])


def fingerprint(tree) -> str:
    """A digest of a parameter tree's names, shapes and exact values, the same on any mesh."""
    sums = jax.device_get(jax.jit(lambda t: jax.tree.map(_words, t))(tree))
    digest = hashlib.sha256()
    for path, leaf in leaves(tree).items():
        digest.update(f"{path_name(path)}{tuple(leaf.shape)}".encode())
    for value in jax.tree.leaves(sums):
        digest.update(np.asarray(value, np.uint32).tobytes())
    return digest.hexdigest()[:16]
