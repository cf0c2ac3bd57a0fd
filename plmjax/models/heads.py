"""Output heads shared by the architectures: tied/untied LM logits, MLM transform, pooler."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers import activations, initializers
from plmjax.layers.linear import make_projection
from plmjax.layers.norms import make_norm


class LMHead(nn.Module):
    """Vocabulary logits: the embedding table transposed (tied) or a separate kernel (untied)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, embedder):
        cfg = self.cfg
        if cfg.tie_embeddings:
            if cfg.scale_tied_logits:
                x = x * cfg.hidden_size**-0.5
            logits = embedder.attend(x)
        else:
            kernel = self.param(
                "kernel",
                nn.with_logical_partitioning(initializers.kernel_init(cfg), ("embed", "vocab")),
                (x.shape[-1], cfg.vocab_size),
            )
            dtype = initializers.compute_dtype(cfg)
            logits = jnp.einsum("...e,ev->...v", x.astype(dtype), kernel.astype(dtype))
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class MaskedLMHead(nn.Module):
    """Dense + activation + norm into the embedding space, then tied logits plus an output bias."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, embedder):
        cfg = self.cfg
        h = make_projection(cfg, cfg.emb_dim, ("embed",), ("hidden",), "transform")(x)
        h = make_norm(cfg, name="norm")(activations.make(cfg.activation)(h))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,))
        return (embedder.attend(h) + bias).astype(jnp.float32)


class TokenDetectionHead(nn.Module):
    """Dense + activation + one logit per token (ELECTRA's discriminator head; no norm)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        h = activations.make(cfg.activation)(make_projection(cfg, cfg.hidden_size, ("embed",), ("hidden",), "dense")(x))
        logits = make_projection(cfg, 1, ("hidden",), ("labels",), "prediction")(h)[..., 0]
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length"))


class Pooler(nn.Module):
    """act(W h_[CLS] + b), tanh by default (DeBERTa: gelu): the sentence vector under NSP and classification heads."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dense = make_projection(cfg, cfg.hidden_size, ("embed",), ("hidden",), "dense")
        return activations.make(cfg.pooler_activation)(dense(x[:, 0]))
