"""ALBERT's pretraining: masked LM with n-gram masking plus sentence-order prediction (SOP) — two consecutive
segments of one document, swapped half the time, the order predicted from the pooled output."""

from __future__ import annotations

import dataclasses

from plmjax.config import Config
from plmjax.data import pipeline
from plmjax.models.pretraining import MaskedLMTask
from plmjax.objectives.builtin import check_masking, masked_features
from plmjax.objectives.registry import Objective, register


@dataclasses.dataclass
class SentenceOrderOptions:
    mask_rate: float = 0.15
    max_predictions: int = 20
    ngram: int = 3  # whole-word spans of 1..ngram words, p ~ 1/length (0: independent tokens)

    def __post_init__(self):
        check_masking("sop", self)


def features(config: Config):
    return masked_features(config.data.seq_length, config.objective.sop.max_predictions, ("sop_labels",))


# No seqio batcher: seqio tasks pack running text, which has no document-internal segment pairs to reorder.
register(Objective("sop", "encoder", SentenceOrderOptions, lambda config: MaskedLMTask(config.model, pair="sop"),
                   features, pipeline.sentence_order_examples))
