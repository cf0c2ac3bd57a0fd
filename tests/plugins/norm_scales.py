"""A toy trainable mask: only the norms' scales train (`--set train.trainable=norm_scales`)."""

import jax

from plmjax.training.trainable import register_mask


def norm_scales(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "scale", params)


register_mask("norm_scales", norm_scales)
