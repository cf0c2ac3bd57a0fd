"""deberta_v3_xsmall: DeBERTa-v3-XSmall's shape (12 layers, hidden 384, 6 heads: 22M backbone parameters), its
generator as wide and 6 layers deep; deberta_v3_base's pretraining otherwise, at learning rate 3e-4."""

import pathlib

from plmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("deberta_v3_base.py"))
    config.model.hidden_size, config.model.num_heads, config.model.mlp_dim = 384, 6, 1536
    options = config.objective.replaced_token_detection
    options.generator_hidden_size, options.generator_num_heads = 384, 6
    config.optimizer.learning_rate = 3e-4
    return config
