"""A convolution over the stack's input added to the first layer's output (model.conv_kernel_size; DeBERTa v2's
ConvLayer): norm(layer_0(x) + act(dropout(conv(x)))), padded positions zero."""

from __future__ import annotations

import flax.linen as nn
import jax

from plmjax.config import ModelConfig
from plmjax.layers import activations, initializers
from plmjax.layers.dropout import make_dropout
from plmjax.layers.norms import make_norm


class InputConvolution(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, inputs, layer_output, mask, deterministic: bool = True):
        cfg = self.cfg
        width, groups = cfg.conv_kernel_size, cfg.conv_groups
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(initializers.kernel_init(cfg), ("conv", "embed", "hidden")),
            (width, cfg.hidden_size // groups, cfg.hidden_size))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("hidden",)), (cfg.hidden_size,))
        keep = mask[..., None].astype(inputs.dtype)
        dtype = initializers.compute_dtype(cfg)
        out = jax.lax.conv_general_dilated(
            (inputs * keep).astype(dtype), kernel.astype(dtype), window_strides=(1,),
            padding=[((width - 1) // 2,) * 2], dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=groups) + bias.astype(dtype)
        out = activations.make(cfg.conv_activation)(make_dropout(cfg)(out * keep, deterministic=deterministic))
        return make_norm(cfg, name="norm")(layer_output + out) * keep
