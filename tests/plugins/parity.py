"""A toy objective, whole in one file: an encoder predicts each token's id modulo `objective.parity.modulus`.

It registers its options, model task, features, corpus pipeline and seqio batcher; no plmjax file names it.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from plmjax.config import ConfigError
from plmjax.data.registry import Batcher
from plmjax.layers.linear import make_projection
from plmjax.models.encoder import Encoder
from plmjax.models.losses import weighted_cross_entropy
from plmjax.models.task import ModelTask
from plmjax.objectives.registry import Objective, register


@dataclasses.dataclass
class ParityOptions:
    modulus: int = 2


class ParityModel(nn.Module):
    cfg: object
    modulus: int

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True):
        hidden = Encoder(self.cfg, name="encoder")(input_ids, attention_mask=attention_mask,
                                                   deterministic=deterministic)
        return make_projection(self.cfg, self.modulus, ("embed",), ("labels",), "parity_head")(hidden)


class ParityTask(ModelTask):
    token_keys = ("input_ids",)

    def __init__(self, cfg, modulus: int):
        self.modulus = modulus
        super().__init__(cfg)

    @classmethod
    def from_config(cls, config):
        return cls(config.model, config.objective.parity.modulus)

    def make_module(self, cfg):
        return ParityModel(cfg, self.modulus)

    def model_inputs(self, batch):
        return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def metrics(self, logits, batch):
        loss, accuracy = weighted_cross_entropy(logits.astype(jnp.float32), batch["parity_labels"],
                                                batch["attention_mask"])
        return {"loss": loss, "accuracy": accuracy}


def features(config):
    length = config.data.seq_length
    return {name: ((length,), np.dtype(np.int32)) for name in ("input_ids", "attention_mask", "parity_labels")}


def _finish(config):
    def finish(rows, rng):
        ids = rows["input_ids"]
        return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32),
                "parity_labels": (ids % config.objective.parity.modulus).astype(np.int32)}

    return finish


def examples(config, tokenizer, documents, rng):
    """Each document's first seq_length tokens, padded."""
    length = config.data.seq_length
    rows = np.zeros((len(documents), length), np.int32)
    for i, ids in enumerate(tokenizer.encode_batch(documents)):
        rows[i, : min(len(ids), length)] = ids[:length]
    return {"input_ids": rows}, _finish(config)


def batcher(config, vocabulary):
    finish = _finish(config)
    return Batcher({"targets": config.data.seq_length}, lambda rows, rng: finish({"input_ids": rows["targets"]}, rng))


def check(config) -> None:
    """A modulus the vocabulary cannot hold is refused when the config is read (Objective.check)."""
    if not 2 <= config.objective.parity.modulus <= config.model.vocab_size:
        raise ConfigError(f"objective.parity.modulus={config.objective.parity.modulus} must be in "
                          f"[2, model.vocab_size={config.model.vocab_size}]")


register(Objective("parity", "encoder", ParityOptions, ParityTask.from_config, features, examples, batcher,
                   check=check))
