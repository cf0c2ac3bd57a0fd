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
    """Encoder MLM on masked positions, plus next-sentence prediction when labels are present; with
    `nsp=False` (RoBERTa-style) the module has no pooler or NSP head (EncoderForMaskedLM)."""

    token_keys = ("input_ids", "masked_ids")

    def __init__(self, cfg: ModelConfig, nsp: bool = True):
        self.nsp = nsp
        super().__init__(cfg)

    @classmethod
    def from_config(cls, config):
        return cls(config.model, nsp=config.objective.mlm.nsp)

    def make_module(self, cfg):
        return EncoderForPretraining(cfg) if self.nsp else EncoderForMaskedLM(cfg)

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
        if "nsp_labels" in batch:
            labels = batch["nsp_labels"]
            nsp_loss, nsp_acc = weighted_cross_entropy(outputs["nsp_logits"], labels, np.ones(labels.shape, np.float32))
            metrics.update(nsp_loss=nsp_loss, nsp_accuracy=nsp_acc, loss=mlm_loss + nsp_loss)
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
