"""The model tasks of the built-in pretraining objectives: MLM (+ NSP), sequence-to-sequence, causal LM.

Each maps a model-ready feature batch (see plmjax.data.pipeline) to (loss, metrics); the objectives that
train them are registered in plmjax.objectives.builtin.
"""

from __future__ import annotations

import numpy as np

from plmjax.config import ModelConfig
from plmjax.models.decoder import DecoderLM
from plmjax.models.encoder import EncoderForMaskedLM, EncoderForPretraining
from plmjax.models.encoder_decoder import EncoderDecoder
from plmjax.models.losses import weighted_cross_entropy
from plmjax.models.task import ModelTask


class MaskedLMTask(ModelTask):
    """Encoder MLM on masked positions, plus a sentence-pair task on the pooled output when `pair` names one:
    next-sentence ("nsp", BERT) or sentence-order prediction ("sop", ALBERT), labelled by `<pair>_labels`.
    Without one (RoBERTa-style) the module has no pooler or pair head (EncoderForMaskedLM)."""

    token_keys = ("input_ids", "masked_ids")

    def __init__(self, cfg: ModelConfig, pair: str | None = "nsp"):
        self.pair = pair
        super().__init__(cfg)

    @classmethod
    def from_config(cls, config):
        return cls(config.model, pair="nsp" if config.objective.mlm.nsp else None)

    def make_module(self, cfg):
        return EncoderForPretraining(cfg) if self.pair else EncoderForMaskedLM(cfg)

    def model_inputs(self, batch):
        return dict(
            input_ids=batch["input_ids"],
            segment_ids=batch.get("segment_ids"),
            attention_mask=batch.get("attention_mask"),
            masked_positions=batch["masked_positions"],
        )

    def metrics(self, outputs, batch):
        mlm_loss, mlm_acc = weighted_cross_entropy(outputs["mlm_logits"], batch["masked_ids"], batch["masked_weights"])
        metrics = {"mlm_loss": mlm_loss, "accuracy": mlm_acc, "loss": mlm_loss}
        if self.pair and f"{self.pair}_labels" in batch:
            labels = batch[f"{self.pair}_labels"]
            pair_loss, pair_acc = weighted_cross_entropy(outputs["nsp_logits"], labels,
                                                         np.ones(labels.shape, np.float32))
            metrics.update({f"{self.pair}_loss": pair_loss, f"{self.pair}_accuracy": pair_acc,
                            "loss": mlm_loss + pair_loss})
        return metrics


class Seq2SeqTask(ModelTask):
    """Encoder-decoder teacher forcing on weighted target tokens (span corruption, text-to-text)."""

    token_keys = ("encoder_input_ids", "decoder_input_ids", "decoder_target_ids")

    def make_module(self, cfg):
        return EncoderDecoder(cfg)

    def model_inputs(self, batch):
        return dict(encoder_input_ids=batch["encoder_input_ids"], decoder_input_ids=batch["decoder_input_ids"])

    def metrics(self, logits, batch):
        loss, acc = weighted_cross_entropy(logits, batch["decoder_target_ids"], batch["decoder_weights"])
        return {"loss": loss, "accuracy": acc}


class CausalLMTask(ModelTask):
    """Decoder-only next-token prediction."""

    token_keys = ("input_ids", "target_ids")

    def make_module(self, cfg):
        return DecoderLM(cfg)

    def model_inputs(self, batch):
        return dict(input_ids=batch["input_ids"])

    def metrics(self, logits, batch):
        loss, acc = weighted_cross_entropy(logits, batch["target_ids"], batch["weights"])
        return {"loss": loss, "accuracy": acc}
