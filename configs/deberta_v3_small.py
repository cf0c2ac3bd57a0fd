"""deberta_v3_small: DeBERTa-v3-Small's shape (6 layers, hidden 768, 12 heads: 44M backbone parameters), its generator
3 layers deep; deberta_v3_base's pretraining otherwise, at learning rate 3e-4."""

import pathlib

from plmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("deberta_v3_base.py"))
    config.model.num_layers = 6
    config.objective.replaced_token_detection.generator_num_layers = 3
    config.optimizer.learning_rate = 3e-4
    return config
