"""Token, position and segment embeddings; optionally factorized (E < H) with a projection."""

from __future__ import annotations

import flax.linen as nn
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

    def __call__(self, ids):
        dtype = initializers.compute_dtype(self.cfg)
        return jnp.take(self.embedding, ids, axis=0).astype(dtype)

    def attend(self, x):
        dtype = initializers.compute_dtype(self.cfg)
        scores = attend if runtime.current().kernel_grads_in_layout else attend_plain
        return scores(x.astype(dtype), self.embedding.astype(dtype))


class InputEmbedder(nn.Module):
    """Sum of token, learned-position and segment embeddings, then norm, dropout and projection."""

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.token = Embed(cfg, cfg.vocab_size, cfg.emb_dim, name="token")
        if cfg.position_kind == "learned":
            self.position = Embed(cfg, cfg.max_length, cfg.emb_dim, ("position", "embed"), name="position")
        if cfg.type_vocab_size:
            self.segment = Embed(cfg, cfg.type_vocab_size, cfg.emb_dim, ("segment", "embed"), name="segment")
        if cfg.embedding_norm:
            self.norm = make_norm(cfg, name="norm")
        if cfg.emb_dim != cfg.hidden_size:
            self.projection = make_projection(cfg, cfg.hidden_size, ("embed",), ("hidden",), "projection")
        self.dropout = make_dropout(cfg)

    def __call__(self, ids, positions=None, segment_ids=None, deterministic: bool = True, project: bool = True):
        """[batch, length, hidden]; with `project=False`, the embedding-width sum before the E -> H projection
        (for a model that shares these embeddings at another width)."""
        cfg = self.cfg
        x = self.token(ids)
        if cfg.position_kind == "learned" and cfg.position_input:
            x = x + self.absolute_positions(ids.shape[-1], positions)
        if cfg.type_vocab_size:  # one type (RoBERTa): every token has it, pairs' second segments too
            x = x + self.segment(jnp.zeros_like(ids) if segment_ids is None or cfg.type_vocab_size == 1
                                 else segment_ids)
        if cfg.embedding_norm:
            x = self.norm(x)
        x = self.dropout(x, deterministic=deterministic)
        if project and cfg.emb_dim != cfg.hidden_size:
            x = self.projection(x)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def absolute_positions(self, length: int, positions=None):
        """The learned position embeddings [1|batch, length, emb] (positions default to 0..length-1)."""
        if positions is None:
            positions = jnp.arange(length)[None, :]
        return self.position(positions + self.cfg.position_offset)

    def attend(self, x):
        """Logits over the vocabulary from the token table (a tied output head)."""
        return self.token.attend(x)
