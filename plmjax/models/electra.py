"""ELECTRA's replaced-token detection: a small masked-LM generator fills the masked positions with tokens sampled
from its softmax, and the discriminator, the model that is kept, tells every token original or replaced.

Parameters: 'encoder' and 'discriminator_head' are the discriminator (HF's ElectraForPreTraining; fine-tuning
reads 'encoder' like any encoder's, with DeBERTa v3's embedding deltas folded in: `fold_deltas`); 'generator'
(its stack, plus its own projection when it is narrower than the embeddings) and 'generator_head' are the
generator, which reads the discriminator's token, position and segment tables and their norm (HF's
ElectraForMaskedLM once split off: `split_generator`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from plmjax.config import ConfigError, ModelConfig
from plmjax.layers.embeddings import fold_deltas
from plmjax.models.encoder import Encoder
from plmjax.models.heads import MaskedLMHead, TokenDetectionHead
from plmjax.models.losses import weighted_cross_entropy
from plmjax.models.task import ModelTask

OPTIONS = "objective.replaced_token_detection"


def generator_config(cfg: ModelConfig, options) -> ModelConfig:
    """The generator's architecture: the discriminator's, at the options' width and depth (0: ELECTRA's defaults,
    a quarter of the width, heads of 64 dimensions, an FFN 4x as wide, as many layers)."""
    hidden = options.generator_hidden_size or max(cfg.hidden_size // 4, 1)
    heads = options.generator_num_heads or max(hidden // 64, 1)
    if hidden > cfg.hidden_size:
        raise ConfigError(f"{OPTIONS}.generator_hidden_size={hidden} is larger than the discriminator's "
                          f"model.hidden_size={cfg.hidden_size}: ELECTRA's generator is the smaller network")
    if hidden % heads:
        raise ConfigError(f"{OPTIONS}.generator_hidden_size={hidden} is not divisible by "
                          f"{OPTIONS}.generator_num_heads={heads}")
    return dataclasses.replace(cfg, hidden_size=hidden, num_heads=heads, head_dim=0, embedding_size=cfg.emb_dim,
                               mlp_dim=options.generator_mlp_dim or 4 * hidden,
                               num_layers=options.generator_num_layers or cfg.num_layers)


def check(config) -> None:
    """A config error naming the key when the generator cannot be built."""
    generator_config(config.model, config.objective.replaced_token_detection)


class ReplacedTokenDetection(nn.Module):
    """Generator MLM logits at the masked positions, the sampled replacements, and the discriminator's logits."""

    cfg: ModelConfig
    generator_cfg: ModelConfig
    temperature: float = 1.0
    disentangled_sharing: bool = False  # the discriminator trains deltas on the shared tables, not the tables (GDES)

    def setup(self):
        self.encoder = Encoder(self.cfg, embedding_deltas=self.disentangled_sharing)
        self.discriminator_head = TokenDetectionHead(self.cfg)
        self.generator = Encoder(self.generator_cfg, shared_embedder=self.encoder.embedder)
        self.generator_head = MaskedLMHead(self.generator_cfg)

    def __call__(self, input_ids, masked_positions, masked_ids, masked_weights, segment_ids=None,
                 attention_mask=None, deterministic: bool = True):
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = input_ids != self.cfg.pad_token_id
        _, selected = self.generator.masked_lm_states(input_ids, segment_ids, attention_mask, deterministic,
                                                      masked_positions)
        logits = self.generator_head(selected, self.encoder.embedder)
        # No gradient through the sample: the discriminator's loss does not train the generator.
        sampled = jax.random.categorical(self.make_rng("sample"), jax.lax.stop_gradient(logits) / self.temperature)
        rows = jnp.arange(input_ids.shape[0])[:, None]
        # Unused prediction slots (weight 0) write past the end, which drops them.
        positions = jnp.where(masked_weights > 0, masked_positions, input_ids.shape[1])
        corrupted = input_ids.at[rows, positions].set(sampled, mode="drop")
        original = input_ids.at[rows, positions].set(masked_ids, mode="drop")
        # A sample equal to the original token counts as original, as in the paper.
        replaced = (corrupted != original) & attention_mask.astype(bool)
        detection = self.discriminator_head(self.encoder(corrupted, segment_ids, attention_mask, deterministic))
        return {"generator_logits": logits, "detection_logits": detection, "corrupted": corrupted,
                "replaced": replaced}


class ReplacedTokenDetectionTask(ModelTask):
    """Generator MLM loss + discriminator_weight x the discriminator's mean binary loss over real tokens."""

    token_keys = ("input_ids", "masked_ids")

    def __init__(self, cfg: ModelConfig, options):
        self.options = options
        self.generator_cfg = generator_config(cfg, options)
        super().__init__(cfg)

    @classmethod
    def from_config(cls, config):
        return cls(config.model, config.objective.replaced_token_detection)

    def make_module(self, cfg):
        return ReplacedTokenDetection(cfg, self.generator_cfg, self.options.temperature,
                                      self.options.embedding_sharing == "gdes")

    def model_inputs(self, batch):
        return dict(input_ids=batch["input_ids"], segment_ids=batch.get("segment_ids"),
                    attention_mask=batch.get("attention_mask"), masked_positions=batch["masked_positions"],
                    masked_ids=batch["masked_ids"], masked_weights=batch["masked_weights"])

    def init(self, rng, batch):
        return self.module.init({"params": rng, "dropout": rng, "sample": rng}, **self.model_inputs(batch))

    def rngs(self, rng, train: bool):
        """Dropout when training, and the generator's samples: from `rng` when training, else a fixed key, so
        that evaluation is repeatable."""
        if not train:
            return {"sample": jax.random.key(0)}
        dropout, sample = jax.random.split(rng)
        return {"dropout": dropout, "sample": sample}

    def metrics(self, outputs, batch):
        generator_loss, generator_accuracy = weighted_cross_entropy(
            outputs["generator_logits"], batch["masked_ids"], batch["masked_weights"])
        real = (batch["input_ids"] != self.cfg.pad_token_id) if batch.get("attention_mask") is None \
            else batch["attention_mask"]
        real = real.astype(jnp.float32)
        labels, logits = outputs["replaced"].astype(jnp.float32), outputs["detection_logits"]
        count = jnp.maximum(real.sum(), 1.0)
        discriminator_loss = (optax.sigmoid_binary_cross_entropy(logits, labels) * real).sum() / count
        predicted = (logits > 0).astype(jnp.float32) * real
        hits = (predicted * labels).sum()
        return {
            "loss": generator_loss + self.options.discriminator_weight * discriminator_loss,
            "generator_loss": generator_loss,
            "generator_accuracy": generator_accuracy,
            "discriminator_loss": discriminator_loss,
            "discriminator_accuracy": ((predicted == labels) * real).sum() / count,
            "replaced_fraction": (labels * real).sum() / count,
            "replaced_precision": hits / jnp.maximum(predicted.sum(), 1.0),
            "replaced_recall": hits / jnp.maximum(labels.sum(), 1.0),
        }


def split_generator(params) -> tuple[dict, dict]:
    """(discriminator, generator) parameter trees of an ELECTRA run: EncoderForTokenDetection's and
    EncoderForMaskedLM's (the generator given a copy of the shared embeddings; the discriminator its tables plus
    its deltas under GDES)."""
    params = dict(params)
    embedder = {k: v for k, v in params["encoder"]["embedder"].items() if not k.endswith("_delta")}
    embedder.pop("projection", None)
    generator = dict(params["generator"])
    if "projection" in generator:
        embedder["projection"] = generator.pop("projection")
    discriminator = {"encoder": fold_deltas(params["encoder"]), "discriminator_head": params["discriminator_head"]}
    return discriminator, {"encoder": {"embedder": embedder, **generator}, "mlm_head": params["generator_head"]}
