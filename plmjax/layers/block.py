"""The Transformer layer (pre/post-norm sublayers) and the layer stack (sharing, remat, scan, hooks, carries)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ConfigError, ModelConfig
# moe and disentangled register ffn_kind=moe and attention_kind=disentangled
from plmjax.layers import disentangled, hooks, moe, runtime  # noqa: F401
from plmjax.layers.attention import AttentionInputs, kernel_class, make_attention
from plmjax.layers.conv import InputConvolution
from plmjax.layers.dropout import make_dropout
from plmjax.layers.ffn import layer_ffn_kind, make_ffn
from plmjax.layers.gradients import materialize_gradient
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
    """Self-attention, optional cross-attention and FFN, each a residual sublayer, then the carry's step.

    Called with `state = (x, carry)`: the hidden states and the layer carry (None without model.layer_carry),
    which attention kernels and the carry's step may read and replace; returns the new state. With `context`,
    x are only the queries of self-attention, whose keys and values are `context` (the sequence `inputs` describe;
    x may be some of its positions).
    """

    cfg: ModelConfig
    cross_attention: bool = False
    scanned: bool = False  # return (state, None) as nn.scan's body expects
    ffn_kind: str = ""  # a name in FFN_KINDS; "" = cfg.ffn_kind
    causal: bool = False

    @nn.compact
    def __call__(self, state, inputs: AttentionInputs, cross_inputs: AttentionInputs | None = None, encoded=None,
                 deterministic: bool = True, decode: bool = False, context=None):
        cfg = self.cfg
        x, carry = state
        attention = make_attention(cfg, "self_attention", causal=self.causal)
        norm = make_norm(cfg, name="self_attention_norm") if cfg.norm_position == "pre" else None
        keys = (lambda h: h) if context is None else (lambda h: context if norm is None else norm(context))
        x, carry = self._residual(
            "self_attention", lambda h, c: attention(h, keys(h), inputs, c, deterministic, decode), x, carry,
            deterministic, norm)
        if self.cross_attention:
            cross = make_attention(cfg, "cross_attention", self_attention=False)
            x, carry = self._residual("cross_attention",
                                      lambda h, c: cross(h, encoded, cross_inputs, c, deterministic), x, carry,
                                      deterministic)
        ffn = make_ffn(cfg, "mlp", self.ffn_kind)
        x, carry = self._residual("mlp", lambda h, c: (ffn(h, deterministic), c), x, carry, deterministic)
        if cfg.layer_carry:
            x, carry = hooks.layer_carry(cfg).step(cfg, name="carry")(x, carry, inputs, deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        if runtime.current().materialize_layer_grads:
            x = materialize_gradient(x)
        self.sow("intermediates", "output", x)
        return ((x, carry), None) if self.scanned else (x, carry)

    def _residual(self, name: str, sublayer: Callable, x, carry, deterministic: bool, norm=None):
        """Pre-norm: x + f(norm(x)); post-norm: norm(x + f(x)); an adapter may edit f's output. f(h, carry) ->
        (y, carry)."""
        cfg = self.cfg
        norm = norm or make_norm(cfg, name=f"{name}_norm")
        y, carry = sublayer(norm(x) if cfg.norm_position == "pre" else x, carry)
        y = make_dropout(cfg)(y, deterministic=deterministic)
        if cfg.residual_adapter:
            adapter = hooks.lookup(hooks.RESIDUAL_ADAPTERS, "model.residual_adapter", cfg.residual_adapter)
            y = adapter(cfg, name=f"{name}_adapter")(y, deterministic)
        return (x + y if cfg.norm_position == "pre" else norm(x + y)), carry


class TransformerStack(nn.Module):
    """`num_layers` layers with the masks, positions and shared modules they use, plus the final norm."""

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
        revisit: Callable | None = None,
    ):
        """x: [batch, length, embed]; mask: [batch, length] (1 = real token); positions: [batch, length].

        In `decode` mode keys come from the cache of size `decode_length` and `mask` is ignored. With
        `revisit(layer, hidden, args_for)`, the stack returns (x, what revisit returned): it is called with the last
        layer's module, that layer's input and `args_for(query_positions)`, the layer's arguments for queries at
        those positions ([batch, queries]; None: every position), to run the last layer again on other queries.
        """
        cfg = self.cfg
        batch, length = x.shape[:2]
        default_positions = positions is None
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        relpos = (
            RelativePositionBias(cfg, bidirectional=not self.causal, name="relpos")
            if cfg.position_kind == "relative"
            else None
        )
        shared_cls = kernel_class(cfg).Shared
        shared = None if shared_cls is None else shared_cls(cfg, causal=self.causal, name="attention_shared")

        def self_inputs(key_mask, key_length, query_positions=None):
            """Self-attention's inputs for queries at `query_positions` (default: every position) over the keys."""
            queries = positions if query_positions is None else query_positions
            bias = attention_bias(key_mask, queries, key_length, self.causal, prefix_length)
            bias = bias if relpos is None else bias + relpos(queries, key_length)
            key_positions = jnp.arange(key_length)[None, :]
            aligned = default_positions and query_positions is None and queries.shape[1] == key_length
            return AttentionInputs(bias, queries, key_positions, None if key_mask is None else key_mask.astype(bool),
                                   None if shared is None else shared(queries, key_positions), aligned)

        inputs = self_inputs(None, decode_length) if decode and decode_length else self_inputs(mask, length)
        cross_inputs = None
        if self.cross_attention:
            cross_inputs = AttentionInputs(
                attention_bias(encoded_mask, positions, encoded.shape[1], causal=False), positions,
                jnp.arange(encoded.shape[1])[None, :], None if encoded_mask is None else encoded_mask.astype(bool))
        carry = hooks.layer_carry(cfg).start(cfg, name="carry_start")(x, mask) if cfg.layer_carry else None
        args = (inputs, cross_inputs, encoded, deterministic, decode)
        state = (x, carry)

        if cfg.scan_layers:
            if cfg.shared_layer_groups or cfg.hidden_hook or cfg.conv_kernel_size or revisit is not None:
                raise ConfigError("model.scan_layers cannot be combined with shared_layer_groups, hidden_hook, "
                                  "conv_kernel_size or mask_decoder_passes")
            scanned = nn.scan(
                self._layer_class(),
                variable_axes={True: 0},  # every collection (params, cache, sown values) gets a layer axis
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=self.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, self.cross_attention, scanned=True, causal=self.causal, name="layers")
            state, _ = scanned(state, *args)
        else:
            groups = min(cfg.shared_layer_groups or self.num_layers, self.num_layers)
            layer_cls = self._layer_class()
            layers = [
                layer_cls(cfg, self.cross_attention, ffn_kind=layer_ffn_kind(cfg, i), causal=self.causal,
                          name=f"layers_{i}")
                for i in range(groups)
            ]
            hook = None
            if cfg.hidden_hook:
                hook = hooks.lookup(hooks.HIDDEN_HOOKS, "model.hidden_hook", cfg.hidden_hook)(cfg, name="hidden_hook")
            conv = InputConvolution(cfg, name="conv") if cfg.conv_kernel_size else None
            for i in range(self.num_layers):
                previous = state[0]
                state = layers[i % groups](state, *args)
                if i == 0 and conv is not None:
                    real = jnp.ones(x.shape[:2], bool) if mask is None else mask
                    state = (conv(x, state[0], real, deterministic), state[1])
                if hook is not None:
                    x, new_mask = hook(state[0], mask, i, deterministic)
                    state = (x, state[1])
                    if new_mask is not mask:
                        mask = new_mask
                        positions = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])
                        args = (self_inputs(mask, x.shape[1]),) + args[1:]
        x = state[0]
        if cfg.norm_position == "pre":
            x = make_norm(cfg, name="final_norm")(x)
            x = make_dropout(cfg)(x, deterministic=deterministic)
        if revisit is not None:
            key_length = previous.shape[1]
            return x, revisit(layers[(self.num_layers - 1) % groups], previous,
                              lambda query_positions: (self_inputs(mask, key_length, query_positions),) + args[1:])
        return x
