"""Disentangled attention (model.attention_kind=disentangled): content and relative-position scores (DeBERTa).

score[i, j] = (q_i . k_j  +  q_i . pk[r(i, j)]  +  k_j . pq[r(i, j)]) / sqrt(d * (1 + position terms)),
where r(i, j) is the (optionally log-bucketed) offset i - j shifted into a table of 2 * span rows of relative
embeddings shared by every layer, pk/pq are those rows projected by position key/query projections (the
content ones with model.share_position_keys), and the c2p / p2c terms are switched by model.position_terms.
Padded queries attend to nothing (all-zero weights), as DeBERTa's XSoftmax does. Queries may be a subset of the
positions (the mask decoder's), each with its own rows, gathered. When queries and keys are the positions 0..L-1
(`inputs.aligned`) the rows depend on i - j alone: the position terms are scored once per distance and realigned
by a relative shift (`skew`), with no per-element gather, which XLA's TPU cost model put at 10x the step.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ConfigError, ModelConfig
from plmjax.layers import initializers
from plmjax.layers.attention import ATTENTION_KERNELS, AttentionInputs, Projections, sow_weights
from plmjax.layers.dropout import make_dropout
from plmjax.layers.linear import make_projection
from plmjax.layers.norms import make_norm


def max_relative_positions(cfg: ModelConfig) -> int:
    return cfg.max_relative_positions if cfg.max_relative_positions > 0 else cfg.max_length


def span(cfg: ModelConfig) -> int:
    """Half the relative-embedding table's rows: the buckets, or the largest distance told apart."""
    return cfg.position_buckets if cfg.position_buckets > 0 else max_relative_positions(cfg)


def log_bucket_position(relative, bucket_size: int, max_position: int):
    """DeBERTa's buckets: offsets within +-bucket_size/2 exact, larger ones log-spaced up to max_position."""
    sign = jnp.sign(relative)
    mid = bucket_size // 2
    abs_pos = jnp.where((relative < mid) & (relative > -mid), mid - 1, jnp.abs(relative)).astype(jnp.float32)
    log_pos = jnp.ceil(jnp.log(abs_pos / mid) / jnp.log(jnp.float32((max_position - 1) / mid)) * (mid - 1)) + mid
    return jnp.where(abs_pos <= mid, relative.astype(jnp.float32), log_pos * sign).astype(jnp.int32)


def relative_positions(cfg: ModelConfig, query_positions, key_positions):
    """Offsets query - key [batch|1, queries, keys], bucketed when model.position_buckets > 0."""
    relative = query_positions[:, :, None] - key_positions[:, None, :]
    if cfg.position_buckets > 0:
        relative = log_bucket_position(relative, cfg.position_buckets, max_relative_positions(cfg))
    return relative


def table_rows(cfg: ModelConfig, query_positions, key_positions):
    """Each (query, key) pair's row in the relative-embedding table [batch|1, queries, keys]."""
    return jnp.clip(relative_positions(cfg, query_positions, key_positions) + span(cfg), 0, 2 * span(cfg) - 1)


def skew(scores):
    """[..., L, 2L-1] -> [..., L, L]: out[i, j] = scores[i, j + L-1-i] (Transformer-XL's relative shift), by
    flattening, slicing and reshaping alone: the rows of a distance-indexed score table, realigned to keys."""
    length = scores.shape[-2]
    flat = scores.reshape(scores.shape[:-2] + (length * (2 * length - 1),))
    flat = flat[..., length - 1:length - 1 + length * (2 * length - 2)]
    return flat.reshape(scores.shape[:-2] + (length, 2 * length - 2))[..., :length]


class RelativeEmbeddings(nn.Module):
    """The stack's relative-position table (normed if asked) and each (query, key) pair's row in it."""

    cfg: ModelConfig
    causal: bool = False

    @nn.compact
    def __call__(self, query_positions, key_positions):
        cfg = self.cfg
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(initializers.embedding_init(cfg), ("relpos_buckets", "embed")),
            (2 * span(cfg), cfg.hidden_size),
        )
        if cfg.norm_relative_embeddings:
            table = make_norm(cfg, name="norm")(table)
        return table.astype(initializers.compute_dtype(cfg)), table_rows(cfg, query_positions, key_positions)


class DisentangledKernel(nn.Module):
    """Content-to-content plus content-to-position and position-to-content attention over `inputs.shared`."""

    cfg: ModelConfig
    causal: bool = False
    projections: Projections | None = None  # the attention's own, reused for positions when keys are shared

    Shared = RelativeEmbeddings

    @nn.compact
    def __call__(self, query, key, value, inputs: AttentionInputs, carry=None, deterministic: bool = True):
        cfg = self.cfg
        terms = cfg.relative_terms
        table, rows = inputs.shared
        if rows.shape[-2:] != (query.shape[1], key.shape[1]):
            raise ConfigError("attention_kind=disentangled needs its own relative positions for every query and key "
                              "(no decoding cache, cross-attention or model.kv_prefix)")
        scale = math.sqrt(query.shape[-1] * (1 + len(terms)))
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        table = make_dropout(cfg)(table, deterministic=deterministic)
        length = key.shape[1]
        by_distance = inputs.aligned and length > 1  # rows depend on i - j alone: no gather (see `skew`)
        if by_distance:
            distances = jnp.arange(length - 1, -length, -1)  # e -> i - j = L-1-e, for e = 0 .. 2L-2
            distance_rows = table_rows(cfg, distances[None], jnp.zeros((1, 1), jnp.int32))[0, :, 0]
        if "c2p" in terms:  # q_i . pk[r(i, j)]
            position_key = self._project(table, "key")
            if by_distance:
                scores = jnp.einsum("bqhd,ehd->bhqe", query, position_key[distance_rows],
                                    preferred_element_type=jnp.float32)
                logits = logits + skew(scores)
            else:
                scores = jnp.einsum("bqhd,rhd->bhqr", query, position_key, preferred_element_type=jnp.float32)
                logits = logits + jnp.take_along_axis(scores, rows[:, None], axis=-1)
        if "p2c" in terms:  # k_j . pq[r(i, j)]: along the keys' rows, then queries and keys swapped
            position_query = self._project(table, "query")
            if by_distance:  # rows by j - i: the distances reversed
                scores = jnp.einsum("bkhd,ehd->bhke", key, position_query[distance_rows[::-1]],
                                    preferred_element_type=jnp.float32)
                logits = logits + jnp.swapaxes(skew(scores), -1, -2)
            else:
                scores = jnp.einsum("bkhd,rhd->bhkr", key, position_query, preferred_element_type=jnp.float32)
                logits = logits + jnp.swapaxes(
                    jnp.take_along_axis(scores, jnp.swapaxes(rows, 1, 2)[:, None], axis=-1), -1, -2)
        logits = logits / scale
        if inputs.bias is not None:
            logits = logits + inputs.bias
        weights = jax.nn.softmax(logits, axis=-1)
        if inputs.key_mask is not None and query.shape[1] == key.shape[1]:  # padded queries attend to nothing
            weights = weights * inputs.key_mask[:, None, :, None]
        weights = weights.astype(initializers.compute_dtype(cfg))
        sow_weights(self, weights)
        weights = make_dropout(cfg, cfg.attention_dropout_rate)(weights, deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", weights, value), carry

    def _project(self, table, which: str):
        """The relative embeddings as keys or queries [rows, heads, head_dim]."""
        cfg = self.cfg
        if cfg.share_position_keys:
            return getattr(self.projections, which)(table)
        return make_projection(cfg, (cfg.num_heads, cfg.kv_dim), ("embed",), ("heads", "kv"), f"position_{which}")(
            table)


ATTENTION_KERNELS["disentangled"] = DisentangledKernel
