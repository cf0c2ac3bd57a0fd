"""Token, position and segment embeddings; optionally factorized (E < H) with a projection."""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import initializers, runtime
from plmjax.layers.dropout import make_dropout
from plmjax.layers.linear import attend, attend_plain, make_projection
from plmjax.layers.norms import make_norm


class Embed(nn.Module):
    """A lookup table that can also `attend` (project hidden states back onto the table)."""

    cfg: ModelConfig
    num_embeddings: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(initializers.embedding_init(self.cfg), self.axes),
            (self.num_embeddings, self.features),
        )

    def __call__(self, ids, delta=None):
        """Rows of the table; with `delta`, of stop_gradient(table) + delta (a model that reads another's table
        without training it: DeBERTa v3's gradient-disentangled embedding sharing)."""
        dtype = initializers.compute_dtype(self.cfg)
        table = self.embedding if delta is None else jax.lax.stop_gradient(self.embedding) + delta
        return jnp.take(table, ids, axis=0).astype(dtype)

    def attend(self, x):
        dtype = initializers.compute_dtype(self.cfg)
        scores = attend if runtime.current().kernel_grads_in_layout else attend_plain
        return scores(x.astype(dtype), self.embedding.astype(dtype))


class InputEmbedder(nn.Module):
    """Sum of token, learned-position and segment embeddings, then norm, dropout and projection.

    With `deltas`, zero-initialised 'token_delta' and 'position_delta' tables too: called with `detached=True` the
    embedder reads stop_gradient(table) + delta, so that caller's loss trains only the deltas (`fold_deltas`).
    """

    cfg: ModelConfig
    deltas: bool = False

    def setup(self):
        cfg = self.cfg
        self.token = Embed(cfg, cfg.vocab_size, cfg.emb_dim, name="token")
        if cfg.position_kind == "learned":
            self.position = Embed(cfg, cfg.max_length, cfg.emb_dim, ("position", "embed"), name="position")
        if self.deltas:
            zeros = lambda axes: nn.with_logical_partitioning(nn.initializers.zeros, axes)  # noqa: E731
            self.token_delta = self.param("token_delta", zeros(("vocab", "embed")), (cfg.vocab_size, cfg.emb_dim))
            if cfg.position_kind == "learned":
                self.position_delta = self.param("position_delta", zeros(("position", "embed")),
                                                 (cfg.max_length, cfg.emb_dim))
        if cfg.type_vocab_size:
            self.segment = Embed(cfg, cfg.type_vocab_size, cfg.emb_dim, ("segment", "embed"), name="segment")
        if cfg.embedding_norm:
            self.norm = make_norm(cfg, name="norm")
        if cfg.emb_dim != cfg.hidden_size:
            self.projection = make_projection(cfg, cfg.hidden_size, ("embed",), ("hidden",), "projection")
        self.dropout = make_dropout(cfg)

    def __call__(self, ids, positions=None, segment_ids=None, deterministic: bool = True, project: bool = True,
                 detached: bool = False):
        """[batch, length, hidden]; with `project=False`, the embedding-width sum before the E -> H projection
        (for a model that shares these embeddings at another width); `detached`: through the deltas."""
        cfg = self.cfg
        x = self.token(ids, self.token_delta if detached else None)
        if cfg.position_kind == "learned" and cfg.position_input:
            x = x + self.absolute_positions(ids.shape[-1], positions, detached)
        if cfg.type_vocab_size:  # one type (RoBERTa): every token has it, pairs' second segments too
            x = x + self.segment(jnp.zeros_like(ids) if segment_ids is None or cfg.type_vocab_size == 1
                                 else segment_ids)
        if cfg.embedding_norm:
            x = self.norm(x)
        x = self.dropout(x, deterministic=deterministic)
        if project and cfg.emb_dim != cfg.hidden_size:
            x = self.projection(x)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def absolute_positions(self, length: int, positions=None, detached: bool = False):
        """The learned position embeddings [1|batch, length, emb] (positions default to 0..length-1)."""
        if positions is None:
            positions = jnp.arange(length)[None, :]
        return self.position(positions + self.cfg.position_offset, self.position_delta if detached else None)

    def attend(self, x):
        """Logits over the vocabulary from the token table (a tied output head)."""
        return self.token.attend(x)


def fold_deltas(params):
    """`params` with every embedder's deltas added to its tables, as the embedder reads them (`detached`): the
    parameters of the same model without deltas (a discriminator that fine-tuning or an export reads)."""
    if not isinstance(params, Mapping):
        return params
    params = {k: fold_deltas(v) for k, v in params.items()}
    for name in ("token", "position"):
        delta = params.pop(f"{name}_delta", None)
        if delta is not None:
            params[name] = {**params[name], "embedding": params[name]["embedding"] + delta}
    return params
