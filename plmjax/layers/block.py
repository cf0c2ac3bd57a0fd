"""The Transformer layer (pre/post-norm sublayers) and the layer stack (sharing, remat, scan, hooks)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ConfigError, ModelConfig
from plmjax.layers import hooks
from plmjax.layers.attention import make_attention
from plmjax.layers.dropout import make_dropout
from plmjax.layers.ffn import layer_ffn_kind, make_ffn
from plmjax.layers.gradients import materialize_gradient
from plmjax.layers.moe import COLLECTION as MOE_COLLECTION
from plmjax.layers.norms import make_norm
from plmjax.layers.positions import RelativePositionBias

NEG_INF = -1e9

REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def attention_bias(key_mask, query_positions, key_length: int, causal: bool, prefix_length=None):
    """Additive bias [batch, 1, queries, keys]: 0 where a query may attend to a key, NEG_INF elsewhere.

    key_mask: [batch, keys] with 1 on real tokens (None: all real). causal: key <= query position.
    prefix_length: [batch]; keys before it are visible to every query (prefix LM).
    """
    key_positions = jnp.arange(key_length)[None, None, :]
    allowed = jnp.ones((query_positions.shape[0], query_positions.shape[1], key_length), bool)
    if causal:
        visible = key_positions <= query_positions[:, :, None]
        if prefix_length is not None:
            visible = visible | (key_positions < prefix_length[:, None, None])
        allowed = allowed & visible
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :].astype(bool)
    return jnp.where(allowed, 0.0, NEG_INF)[:, None, :, :].astype(jnp.float32)


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention and FFN, each a residual sublayer."""

    cfg: ModelConfig
    cross_attention: bool = False
    scanned: bool = False  # return (x, None) as nn.scan's body expects
    ffn_kind: str = ""  # a name in FFN_KINDS; "" = cfg.ffn_kind

    @nn.compact
    def __call__(self, x, bias, encoded=None, cross_bias=None, deterministic: bool = True, decode: bool = False):
        cfg = self.cfg
        x = self._residual(
            "self_attention",
            lambda h: make_attention(cfg, "self_attention")(h, h, bias, deterministic, decode),
            x,
            deterministic,
        )
        if self.cross_attention:
            x = self._residual(
                "cross_attention",
                lambda h: make_attention(cfg, "cross_attention", self_attention=False)(
                    h, encoded, cross_bias, deterministic
                ),
                x,
                deterministic,
            )
        x = self._residual("mlp", lambda h: make_ffn(cfg, "mlp", self.ffn_kind)(h, deterministic), x, deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        if cfg.materialize_layer_grads:
            x = materialize_gradient(x)
        self.sow("intermediates", "output", x)
        return (x, None) if self.scanned else x

    def _residual(self, name: str, sublayer: Callable, x, deterministic: bool):
        """Pre-norm: x + f(norm(x)); post-norm: norm(x + f(x)); an adapter may edit f's output."""
        cfg = self.cfg
        norm = make_norm(cfg, name=f"{name}_norm")
        y = sublayer(norm(x) if cfg.norm_position == "pre" else x)
        y = make_dropout(cfg)(y, deterministic=deterministic)
        if cfg.residual_adapter:
            adapter = hooks.lookup(hooks.RESIDUAL_ADAPTERS, "model.residual_adapter", cfg.residual_adapter)
            y = adapter(cfg, name=f"{name}_adapter")(y, deterministic)
        return x + y if cfg.norm_position == "pre" else norm(x + y)


class TransformerStack(nn.Module):
    """`num_layers` layers with the masks and position bias they share, plus the final norm."""

    cfg: ModelConfig
    num_layers: int
    causal: bool
    cross_attention: bool = False

    def _layer_class(self):
        cfg = self.cfg
        layer = TransformerLayer
        if cfg.remat != "none":
            layer = nn.remat(layer, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers,
                             static_argnums=(5, 6))
        return layer

    @nn.compact
    def __call__(
        self,
        x,
        mask=None,
        positions=None,
        encoded=None,
        encoded_mask=None,
        prefix_length=None,
        deterministic: bool = True,
        decode: bool = False,
        decode_length: int | None = None,
    ):
        """x: [batch, length, embed]; mask: [batch, length] (1 = real token); positions: [batch, length].

        In `decode` mode keys come from the cache of size `decode_length` and `mask` is ignored.
        """
        cfg = self.cfg
        batch, length = x.shape[:2]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        relpos = (
            RelativePositionBias(cfg, bidirectional=not self.causal, name="relpos")
            if cfg.position_kind == "relative"
            else None
        )

        def self_bias(key_mask, key_length):
            bias = attention_bias(key_mask, positions, key_length, self.causal, prefix_length)
            return bias if relpos is None else bias + relpos(positions, key_length)

        bias = self_bias(None, decode_length) if decode and decode_length else self_bias(mask, length)
        cross_bias = None
        if self.cross_attention:
            cross_bias = attention_bias(
                encoded_mask, positions, encoded.shape[1], causal=False
            )
        args = (bias, encoded, cross_bias, deterministic, decode)

        if cfg.scan_layers:
            if cfg.shared_layer_groups or cfg.hidden_hook:
                raise ConfigError("model.scan_layers cannot be combined with shared_layer_groups or hidden_hook")
            scanned = nn.scan(
                self._layer_class(),
                variable_axes={"params": 0, "cache": 0, "intermediates": 0, MOE_COLLECTION: 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, self.cross_attention, scanned=True, name="layers")
            x, _ = scanned(x, *args)
        else:
            groups = min(cfg.shared_layer_groups or self.num_layers, self.num_layers)
            layer_cls = self._layer_class()
            layers = [
                layer_cls(cfg, self.cross_attention, ffn_kind=layer_ffn_kind(cfg, i), name=f"layers_{i}")
                for i in range(groups)
            ]
            hook = None
            if cfg.hidden_hook:
                hook = hooks.lookup(hooks.HIDDEN_HOOKS, "model.hidden_hook", cfg.hidden_hook)(cfg, name="hidden_hook")
            for i in range(self.num_layers):
                x = layers[i % groups](x, *args)
                if hook is not None:
                    x, new_mask = hook(x, mask, i, deterministic)
                    if new_mask is not mask:
                        mask = new_mask
                        positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
                        args = (self_bias(mask, x.shape[1]),) + args[1:]
        if cfg.norm_position == "pre":
            x = make_norm(cfg, name="final_norm")(x)
            x = make_dropout(cfg)(x, deterministic=deterministic)
        return x
