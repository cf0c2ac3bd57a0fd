"""The built-in objectives, registered once: BERT's MLM (+ NSP), T5's span corruption, causal LM.

Each names its options, model task, features, corpus pipeline (plmjax.data.pipeline) and seqio batcher.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from plmjax.config import Config, ConfigError
from plmjax.data import pipeline
from plmjax.data.registry import Batcher
from plmjax.models.pretraining import CausalLMTask, MaskedLMTask, Seq2SeqTask
from plmjax.objectives.registry import Objective, register
from plmjax.objectives.span_corruption import compute_input_and_target_lengths

I32, F32 = np.dtype(np.int32), np.dtype(np.float32)


@dataclasses.dataclass
class MaskedLMOptions:
    mask_rate: float = 0.15
    max_predictions: int = 20  # masked positions predicted per sequence (BERT's max_predictions_per_seq)
    nsp: bool = True  # next-sentence prediction on sentence pairs (BERT); false: single segments (RoBERTa)
    full_sentences: bool = False  # nsp=false: rows of whole sentences packed across documents (RoBERTa)
    ngram: int = 0  # 0: mask tokens independently; n: whole-word spans of 1..n words, p ~ 1/length (ALBERT)

    def __post_init__(self):
        check_masking("mlm", self)
        if self.full_sentences and self.nsp:
            raise ConfigError("objective.mlm.full_sentences packs text across documents, which leaves no sentence "
                              "pairs for next-sentence prediction: set objective.mlm.nsp=false")


@dataclasses.dataclass
class SpanCorruptionOptions:
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0


@dataclasses.dataclass
class CausalLMOptions:
    pass


def check_masking(name: str, options) -> None:
    """Masking options that cannot work, as a config error naming the key."""
    if not 0.0 < options.mask_rate < 1.0:
        raise ConfigError(f"objective.{name}.mask_rate={options.mask_rate} must be in (0, 1)")
    if options.max_predictions < 1:
        raise ConfigError(f"objective.{name}.max_predictions={options.max_predictions} must be >= 1")
    if getattr(options, "ngram", 0) < 0:
        raise ConfigError(f"objective.{name}.ngram={options.ngram} must be >= 0")


def masked_features(length: int, predictions: int, labels: tuple[str, ...] = ()):
    """An encoder row of `length` tokens with `predictions` masked positions, plus the per-row int `labels`."""
    spec = dict(input_ids=((length,), I32), segment_ids=((length,), I32), attention_mask=((length,), I32),
                masked_positions=((predictions,), I32), masked_ids=((predictions,), I32),
                masked_weights=((predictions,), F32))
    return dict(spec, **{name: ((), I32) for name in labels})


def mlm_features(config: Config):
    options = config.objective.mlm
    return masked_features(config.data.seq_length, options.max_predictions, ("nsp_labels",) if options.nsp else ())


def span_corruption_features(config: Config):
    options = config.objective.span_corruption
    targets = config.data.target_length or compute_input_and_target_lengths(
        config.data.seq_length, options.noise_density, options.mean_noise_span_length)[1]
    length = config.data.seq_length
    return dict(encoder_input_ids=((length,), I32), decoder_input_ids=((targets,), I32),
                decoder_target_ids=((targets,), I32), decoder_weights=((targets,), F32))


def causal_lm_features(config: Config):
    length = config.data.seq_length
    return dict(input_ids=((length,), I32), target_ids=((length,), I32), weights=((length,), F32))


def span_corruption_batcher(config: Config, vocabulary) -> Batcher:
    """T5 span corruption of windows sized so the corrupted inputs fill seq_length exactly."""
    raw_length, finish = pipeline.span_corruption_objective(config, vocabulary)
    return Batcher({"targets": raw_length}, lambda rows, rng: finish({"tokens": rows["targets"]}, rng))


def mlm_batcher(config: Config, vocabulary) -> Batcher:
    """BERT masking of [CLS] window [SEP] rows of seq_length tokens."""
    if config.objective.mlm.nsp:
        raise ValueError(
            "seqio MLM tasks pack running text (RoBERTa-style) and have no sentence pairs for "
            "next-sentence prediction: set objective.mlm.nsp=false"
        )
    return masked_batcher(config, vocabulary, pipeline.mlm_objective(config, vocabulary))


def masked_batcher(config: Config, vocabulary, finish) -> Batcher:
    """seqio's packed [CLS] window [SEP] rows of seq_length tokens as encoder features, then `finish` (masking)."""

    def finalize(rows, rng):
        ids = rows["targets"]
        features = {"input_ids": ids, "segment_ids": np.zeros_like(ids),
                    "attention_mask": (ids != vocabulary.pad_id).astype(np.int32)}
        return finish(features, rng)

    return Batcher({"targets": config.data.seq_length}, finalize)


def causal_lm_batcher(config: Config, vocabulary) -> Batcher:
    """Next-token prediction over windows of seq_length + 1 tokens."""
    finish = pipeline.causal_lm_objective(vocabulary)
    return Batcher({"targets": config.data.seq_length + 1}, lambda rows, rng: finish({"tokens": rows["targets"]}, rng))


register(Objective("mlm", "encoder", MaskedLMOptions, MaskedLMTask.from_config, mlm_features,
                   pipeline.mlm_examples, mlm_batcher))
register(Objective("span_corruption", "encoder_decoder", SpanCorruptionOptions, Seq2SeqTask.from_config,
                   span_corruption_features, pipeline.span_examples, span_corruption_batcher))
register(Objective("causal_lm", "decoder", CausalLMOptions, CausalLMTask.from_config, causal_lm_features,
                   pipeline.causal_examples, causal_lm_batcher, seqio_suffix="lm"))

# The other built-in objectives, each in its own module.
from plmjax.objectives import replaced_token_detection, sentence_order, sift  # noqa: E402,F401
