"""Position-wise feed-forward blocks; `FFN_KINDS` is where e.g. mixture-of-experts registers."""

from __future__ import annotations

import flax.linen as nn

from plmjax.config import ModelConfig
from plmjax.layers import activations
from plmjax.layers.dropout import make_dropout
from plmjax.layers.linear import make_projection


class FeedForward(nn.Module):
    """act(x W_i) W_o, or the gated form act(x W_i0) * (x W_i1) W_o.

    Subclasses change how a projection is made (`project`) and how the hidden layer is laid out
    (`hidden_axes`), e.g. one kernel per expert.
    """

    cfg: ModelConfig
    hidden_axes = ("batch", "length", "mlp")

    def project(self, features: int, in_axis: str, out_axis: str, name: str) -> nn.Module:
        return make_projection(self.cfg, features, (in_axis,), (out_axis,), name)

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.cfg
        act = activations.make(cfg.activation)
        if cfg.gated_ffn:
            h = act(self.project(cfg.mlp_dim, "embed", "mlp", "wi_0")(x))
            h = h * self.project(cfg.mlp_dim, "embed", "mlp", "wi_1")(x)
        else:
            h = act(self.project(cfg.mlp_dim, "embed", "mlp", "wi")(x))
        if cfg.ffn_dropout:
            h = make_dropout(cfg)(h, deterministic=deterministic)
        h = nn.with_logical_constraint(h, self.hidden_axes)
        return self.project(cfg.hidden_size, "mlp", "embed", "wo")(h)


FFN_KINDS: dict[str, type[nn.Module]] = {"dense": FeedForward}  # plmjax.layers.moe adds "moe"


def layer_ffn_kind(cfg: ModelConfig, layer: int) -> str:
    """cfg.ffn_kind, except that with ffn_kind=moe only layers moe_every-1, 2*moe_every-1, ... are MoE."""
    if cfg.ffn_kind == "moe" and (layer + 1) % cfg.moe_every:
        return "dense"
    return cfg.ffn_kind


def make_ffn(cfg: ModelConfig, name: str, kind: str = "") -> nn.Module:
    """The FFN of `kind` (default: cfg.ffn_kind)."""
    kind = kind or cfg.ffn_kind
    if kind not in FFN_KINDS:
        raise ValueError(f"unknown model.ffn_kind {kind!r}; known: {', '.join(FFN_KINDS)}")
    return FFN_KINDS[kind](cfg, name=name)
