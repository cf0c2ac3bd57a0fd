"""Encoder-only models (BERT family): the encoder, pretraining heads (MLM, + NSP) and task heads."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from plmjax.config import ModelConfig
from plmjax.layers.block import TransformerStack
from plmjax.layers.dropout import make_dropout
from plmjax.layers.embeddings import InputEmbedder
from plmjax.layers.linear import make_projection
from plmjax.models.heads import MaskedLMHead, Pooler, TokenDetectionHead


class Encoder(nn.Module):
    """Embeddings and a bidirectional stack: token ids -> hidden states [batch, length, hidden].

    With `shared_embedder` (ELECTRA's generator) the token, position and segment tables and their norm are
    another model's; this encoder keeps its own embedding -> hidden projection ('projection') when its width
    differs from the embeddings'. With `embedding_deltas` it reads its own tables through zero-initialised
    deltas and trains only those (DeBERTa v3's discriminator beside a generator that shares the tables).
    """

    cfg: ModelConfig
    shared_embedder: nn.Module | None = None
    embedding_deltas: bool = False

    def setup(self):
        cfg = self.cfg
        self.embedder = (InputEmbedder(cfg, deltas=self.embedding_deltas) if self.shared_embedder is None
                         else self.shared_embedder)
        if self.shared_embedder is not None and cfg.emb_dim != cfg.hidden_size:
            self.projection = make_projection(cfg, cfg.hidden_size, ("embed",), ("hidden",), "projection")
        self.stack = TransformerStack(cfg, cfg.num_layers, causal=False)

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True, revisit=None):
        """Hidden states; with the stack's `revisit`, (hidden states, what it returned)."""
        cfg, own = self.cfg, self.shared_embedder is None
        if attention_mask is None:
            attention_mask = input_ids != cfg.pad_token_id
        x = self.embedder(input_ids, segment_ids=segment_ids, deterministic=deterministic, project=own,
                          detached=self.embedding_deltas)
        if not own and cfg.emb_dim != cfg.hidden_size:
            x = self.projection(x)
        return self.stack(x, mask=attention_mask, deterministic=deterministic, revisit=revisit)

    def masked_lm_states(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True,
                         masked_positions=None):
        """(hidden states, the states MLM predictions read at `masked_positions` [batch, predictions], or at every
        position: the mask decoder's when model.mask_decoder_passes)."""
        if self.cfg.mask_decoder_passes:
            return self(input_ids, segment_ids, attention_mask, deterministic,
                        revisit=enhanced_mask_decoder(self.cfg, self.embedder, masked_positions))
        hidden = self(input_ids, segment_ids, attention_mask, deterministic)
        return hidden, hidden if masked_positions is None else gather_positions(hidden, masked_positions)


def enhanced_mask_decoder(cfg: ModelConfig, embedder, masked_positions=None):
    """DeBERTa's enhanced mask decoder, as the stack's `revisit`: queries = the last layer's input plus absolute
    position embeddings, run through the last layer (its weights) model.mask_decoder_passes times, attending over
    that input; absolute positions reach the MLM predictions only this way. Each query only attends, so only the
    `masked_positions`' queries are run (DeBERTa's code runs every position's, then keeps the masked ones)."""

    def revisit(layer, hidden, args_for):
        queries = hidden + embedder.absolute_positions(hidden.shape[1]).astype(hidden.dtype)
        if masked_positions is not None:
            queries = gather_positions(queries, masked_positions)
        args = args_for(masked_positions)
        for _ in range(cfg.mask_decoder_passes):
            queries, _ = layer((queries, None), *args, hidden)
        return queries

    return revisit


def gather_positions(x, positions):
    """x[b, positions[b, p]] -> [batch, predictions, hidden]."""
    return jnp.take_along_axis(x, positions[..., None], axis=1)


class EncoderModel(nn.Module):
    """The encoder plus its tanh pooler: hidden states and a sentence vector (HF's BertModel)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.pooler = Pooler(self.cfg)

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        hidden = self.encoder(input_ids, segment_ids, attention_mask, deterministic)
        return {"hidden": hidden, "pooled": self.pooler(hidden)}


class EncoderStates(nn.Module):
    """The encoder's hidden states alone, without a pooler (HF's DebertaV2Model)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        return {"hidden": self.encoder(input_ids, segment_ids, attention_mask, deterministic)}


class EncoderForPretraining(nn.Module):
    """MLM logits (all positions, or only `masked_positions`) and the sentence-pair logits ('nsp_head': next-sentence
    prediction, or ALBERT's sentence-order prediction)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.pooler = Pooler(self.cfg)
        self.mlm_head = MaskedLMHead(self.cfg)
        self.nsp_head = make_projection(self.cfg, 2, ("embed",), ("labels",), "nsp_head")

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, masked_positions=None,
                 deterministic: bool = True):
        hidden, selected = self.encoder.masked_lm_states(input_ids, segment_ids, attention_mask, deterministic,
                                                         masked_positions)
        return {
            "hidden": hidden,
            "mlm_logits": self.mlm_head(selected, self.encoder.embedder),
            "nsp_logits": self.nsp_head(self.pooler(hidden)).astype(jnp.float32),
        }


class EncoderForMaskedLM(nn.Module):
    """MLM logits alone (RoBERTa-style pretraining, HF's *ForMaskedLM): EncoderForPretraining without
    the pooler and next-sentence head, its 'encoder' and 'mlm_head' parameters named the same."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.mlm_head = MaskedLMHead(self.cfg)

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, masked_positions=None,
                 deterministic: bool = True):
        hidden, selected = self.encoder.masked_lm_states(input_ids, segment_ids, attention_mask, deterministic,
                                                         masked_positions)
        return {"hidden": hidden, "mlm_logits": self.mlm_head(selected, self.encoder.embedder)}


class EncoderForTokenDetection(nn.Module):
    """One logit per token: was it replaced? (ELECTRA's discriminator, HF's ElectraForPreTraining)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.discriminator_head = TokenDetectionHead(self.cfg)

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        hidden = self.encoder(input_ids, segment_ids, attention_mask, deterministic)
        return {"hidden": hidden, "detection_logits": self.discriminator_head(hidden)}


class EncoderForSequenceClassification(nn.Module):
    """Pooled [CLS] -> num_labels logits (num_labels=1: regression)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.pooler = Pooler(self.cfg)
        self.dropout = make_dropout(self.cfg)
        self.classifier = make_projection(self.cfg, self.cfg.num_labels, ("embed",), ("labels",), "classifier")

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        hidden = self.encoder(input_ids, segment_ids, attention_mask, deterministic)
        pooled = self.dropout(self.pooler(hidden), deterministic=deterministic)
        return self.classifier(pooled).astype(jnp.float32)


class EncoderForTokenClassification(nn.Module):
    """Per-token num_labels logits (tagging, keyphrase extraction)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.dropout = make_dropout(self.cfg)
        self.classifier = make_projection(self.cfg, self.cfg.num_labels, ("embed",), ("labels",), "classifier")

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        hidden = self.encoder(input_ids, segment_ids, attention_mask, deterministic)
        return self.classifier(self.dropout(hidden, deterministic=deterministic)).astype(jnp.float32)


class EncoderForSpanExtraction(nn.Module):
    """Start and end logits per token (extractive QA)."""

    cfg: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.cfg)
        self.qa_outputs = make_projection(self.cfg, 2, ("embed",), ("labels",), "qa_outputs")

    def __call__(self, input_ids, segment_ids=None, attention_mask=None, deterministic: bool = True):
        hidden = self.encoder(input_ids, segment_ids, attention_mask, deterministic)
        logits = self.qa_outputs(hidden).astype(jnp.float32)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


# The encoder models by head name: what a converted checkpoint holds (plmjax.convert) and what a run trains.
HEADS = {
    "pretraining": EncoderForPretraining,
    "masked_lm": EncoderForMaskedLM,
    "replaced_token_detection": EncoderForTokenDetection,
    "sequence_classification": EncoderForSequenceClassification,
    "token_classification": EncoderForTokenClassification,
    "span_extraction": EncoderForSpanExtraction,
    "none": EncoderModel,
    "encoder": EncoderStates,
}
