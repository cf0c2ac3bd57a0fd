"""ELECTRA's pretraining: a generator's masked LM plus the discriminator's replaced-token detection over every
token (plmjax.models.electra). Positions are chosen like BERT's, then 85% become [MASK] and 15% stay, with no random
tokens (the generator supplies the replacements)."""

from __future__ import annotations

import dataclasses

import numpy as np

from plmjax.config import Config, ConfigError
from plmjax.data import pipeline
from plmjax.models import electra
from plmjax.objectives.builtin import check_masking, masked_batcher, masked_features
from plmjax.objectives.registry import Objective, register

MASK_FRACTION = 0.85


@dataclasses.dataclass
class ReplacedTokenDetectionOptions:
    mask_rate: float = 0.15
    max_predictions: int = 20
    discriminator_weight: float = 50.0  # lambda: loss = generator MLM + lambda * discriminator
    temperature: float = 1.0  # of the generator's softmax when sampling replacements
    generator_hidden_size: int = 0  # 0: a quarter of model.hidden_size
    generator_num_heads: int = 0  # 0: generator_hidden_size // 64, at least 1
    generator_mlp_dim: int = 0  # 0: 4 x generator_hidden_size
    generator_num_layers: int = 0  # 0: model.num_layers
    full_sentences: bool = False  # rows of whole sentences packed across documents (else one document's)
    # shared: both losses train the shared embeddings (ELECTRA); gdes: the discriminator reads them through its own
    # zero-initialised deltas and its loss trains only those (DeBERTa v3's gradient-disentangled embedding sharing)
    embedding_sharing: str = "shared"

    def __post_init__(self):
        check_masking("replaced_token_detection", self)
        for key in ("discriminator_weight", "temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"objective.replaced_token_detection.{key}={getattr(self, key)} must be > 0")
        if self.embedding_sharing not in ("shared", "gdes"):
            raise ConfigError(f"objective.replaced_token_detection.embedding_sharing={self.embedding_sharing!r} "
                              "must be shared or gdes")
        for key in ("generator_hidden_size", "generator_num_heads", "generator_mlp_dim", "generator_num_layers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"objective.replaced_token_detection.{key}={getattr(self, key)} must be >= 0 "
                                  "(0: ELECTRA's default)")


def masking(tokenizer, config: Config):
    return pipeline.masking_objective(tokenizer, config.objective.replaced_token_detection,
                                      mask_fraction=MASK_FRACTION, random_fraction=0.0)


def features(config: Config):
    return masked_features(config.data.seq_length, config.objective.replaced_token_detection.max_predictions)


def examples(config: Config, tokenizer, documents, rng: np.random.Generator):
    options = config.objective.replaced_token_detection
    return pipeline.single_rows(config, tokenizer, documents, options.full_sentences), masking(tokenizer, config)


def batcher(config: Config, vocabulary):
    """ELECTRA's masking of seqio's packed [CLS] window [SEP] rows."""
    return masked_batcher(config, vocabulary, masking(vocabulary, config))


register(Objective("replaced_token_detection", "encoder", ReplacedTokenDetectionOptions,
                   electra.ReplacedTokenDetectionTask.from_config, features, examples, batcher,
                   check=electra.check))
