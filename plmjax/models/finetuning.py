"""Fine-tuning tasks: an encoder head plus its loss, one class per head kind, and the dispatch from a
downstream task (plmjax.data.downstream) in data.mixture to the model task that trains it.

Like the pretraining tasks they map a feature batch to (loss, metrics) and refuse bad host batches;
`predict` gives the head's outputs for evaluation. Encoder-decoder models fine-tune with the
pretraining `Seq2SeqTask` on text-to-text targets.

Batches: `input_ids`, `segment_ids`, `attention_mask` ([batch, length]; [batch, choices, length]
for multiple choice) plus `labels` (class ids, floats for regression, the right choice) or
`start_positions` / `end_positions` (token indices of the answer span; 0, the [CLS], for none).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from plmjax.config import Config, ConfigError, apply_overrides
from plmjax.data import downstream
from plmjax.models.encoder import (EncoderForSequenceClassification, EncoderForSpanExtraction,
                                   EncoderForTokenClassification)
from plmjax.models.losses import weighted_cross_entropy
from plmjax.models.pretraining import Seq2SeqTask
from plmjax.models.task import ModelTask


def _check_range(batch, key: str, low: int, high: int, what: str) -> None:
    values = np.asarray(batch[key])
    bad = values[(values < low) | (values >= high)]
    if bad.size:
        raise ValueError(f"feature {key!r} holds {bad.flat[0].item()!r}, outside [{low}, {high}) ({what})")


class HeadTask(ModelTask):
    """Base: an encoder head on `input_ids` / `segment_ids` / `attention_mask`."""

    token_keys = ("input_ids",)
    label_keys: tuple[str, ...] = ("labels",)

    def model_inputs(self, batch):
        return dict(input_ids=batch["input_ids"], segment_ids=batch.get("segment_ids"),
                    attention_mask=batch.get("attention_mask"))

    def predict(self, params, batch):
        """The head's outputs without dropout, shaped per example (see the subclasses)."""
        return self.forward({"params": params}, batch, deterministic=True)[0]

    def validate(self, batch) -> None:
        super().validate(batch)
        for key in self.label_keys:
            if key not in batch:
                raise ValueError(f"batch is missing feature {key!r}; it has {sorted(batch)}")
        self.check_labels(batch)

    def check_labels(self, batch) -> None:
        raise NotImplementedError


class ClassificationTask(HeadTask):
    """[CLS] classification into model.num_labels classes; logits [batch, num_labels]."""

    def make_module(self, cfg):
        return EncoderForSequenceClassification(cfg)

    def metrics(self, logits, batch):
        labels = batch["labels"]
        loss, acc = weighted_cross_entropy(logits, labels, jnp.ones(labels.shape, jnp.float32))
        return {"loss": loss, "accuracy": acc}

    def check_labels(self, batch):
        _check_range(batch, "labels", 0, self.cfg.num_labels, f"model.num_labels={self.cfg.num_labels}")


class RegressionTask(ClassificationTask):
    """One real value per example (STS-B; model.num_labels=1), a mean squared error; predictions [batch]."""

    def forward(self, variables, batch, deterministic: bool, rngs=None, collections=()):
        outputs, sown = super().forward(variables, batch, deterministic, rngs, collections)
        return outputs[:, 0], sown

    def metrics(self, predictions, batch):
        return {"loss": jnp.mean(jnp.square(predictions - batch["labels"].astype(jnp.float32)))}

    def check_labels(self, batch):
        if not np.all(np.isfinite(np.asarray(batch["labels"], np.float64))):
            raise ValueError("feature 'labels' holds a non-finite regression target")


class MultipleChoiceTask(ClassificationTask):
    """A score per choice (model.num_labels=1) from the [CLS] of its (context, choice) row; logits [batch, choices]."""

    def model_inputs(self, batch):
        flat = lambda x: None if x is None else x.reshape((-1, x.shape[-1]))  # noqa: E731
        return {k: flat(v) for k, v in super().model_inputs(batch).items()}

    def forward(self, variables, batch, deterministic: bool, rngs=None, collections=()):
        scores, sown = super().forward(variables, batch, deterministic, rngs, collections)
        return scores.reshape(batch["input_ids"].shape[:2]), sown

    def check_labels(self, batch):
        choices = np.shape(batch["input_ids"])[1]
        _check_range(batch, "labels", 0, choices, f"{choices} choices")


class SpanExtractionTask(HeadTask):
    """Start and end logits per token ({start_logits, end_logits}, each [batch, length])."""

    label_keys = ("start_positions", "end_positions")

    def make_module(self, cfg):
        return EncoderForSpanExtraction(cfg)

    def metrics(self, outputs, batch):
        start = optax.softmax_cross_entropy_with_integer_labels(outputs["start_logits"], batch["start_positions"])
        end = optax.softmax_cross_entropy_with_integer_labels(outputs["end_logits"], batch["end_positions"])
        exact = (jnp.argmax(outputs["start_logits"], -1) == batch["start_positions"]) & (
            jnp.argmax(outputs["end_logits"], -1) == batch["end_positions"])
        return {"loss": (start.mean() + end.mean()) / 2, "span_accuracy": exact.astype(jnp.float32).mean()}

    def check_labels(self, batch):
        length = np.shape(batch["input_ids"])[-1]
        for key in self.label_keys:
            _check_range(batch, key, 0, length, f"token positions of a length-{length} sequence")


HEADS: dict[str, type[HeadTask]] = {
    "classification": ClassificationTask,
    "regression": RegressionTask,
    "multiple_choice": MultipleChoiceTask,
    "span": SpanExtractionTask,
}


def finetuning_config(config: Config, name: str) -> Config:
    """`config` set to fine-tune on downstream task (or, text-to-text, benchmark) `name`.

    data.mixture becomes the registered name in the format the architecture trains, and for an
    encoder model.num_labels becomes what the task's head predicts.
    """
    base, fmt = downstream.resolve(name, config.model.arch)
    overrides = [f"data.mixture={base}_{fmt}"]
    if fmt == "features":
        overrides.append(f"model.num_labels={_features(base).num_labels}")
    return apply_overrides(config, overrides)


def _features(name: str):
    if name in downstream.SUITES:
        raise ConfigError(f"an encoder fine-tunes one {name} task at a time (each has its own head): "
                          f"{', '.join(downstream.SUITES[name])}")
    return downstream.benchmarks()[name].features


class TokenClassificationTask(HeadTask):
    """A label per token (tagging, keyphrase extraction); logits [batch, length, num_labels]. Tokens with label
    weight 0 (specials, padding, a word's later sub-words) do not count."""

    label_keys = ("labels", "label_weights")

    def make_module(self, cfg):
        return EncoderForTokenClassification(cfg)

    def metrics(self, logits, batch):
        loss, acc = weighted_cross_entropy(logits, batch["labels"], batch["label_weights"])
        return {"loss": loss, "accuracy": acc}

    def check_labels(self, batch):
        _check_range(batch, "labels", 0, self.cfg.num_labels, f"model.num_labels={self.cfg.num_labels}")


HEADS["token_classification"] = TokenClassificationTask


def file_task(config: Config) -> ModelTask:
    """The model task that trains on the task file in data.task_file: its kind's head, or Seq2SeqTask."""
    from plmjax.data import task_files

    task = task_files.TaskFile.read(config.data.task_file)
    if task.kind == "text_to_text":
        if config.model.arch != "encoder_decoder":
            raise ConfigError(f"{task.path}: text_to_text tasks train encoder-decoder models, not model.arch="
                              f"{config.model.arch!r}")
        return Seq2SeqTask(config.model)
    if config.model.arch != "encoder":
        raise ConfigError(f"{task.path}: {task.kind} tasks fine-tune an encoder, not model.arch={config.model.arch!r}")
    if config.model.num_labels != task.num_labels:
        raise ConfigError(f"{task.path}'s {task.kind} head needs model.num_labels={task.num_labels}, not "
                          f"{config.model.num_labels} (`plmjax train --task {task.path}` sets it)")
    return HEADS[task_files.HEADS[task.kind]](config.model)


def benchmark_task(config: Config) -> ModelTask | None:
    """The model task that fine-tunes on the task file in data.task_file or the benchmark in data.mixture; None
    for other mixtures.

    Text-to-text formats train the encoder-decoder's Seq2SeqTask; features formats the head of the
    task's kind, whose size model.num_labels must match.
    """
    if config.data.task_file:
        return file_task(config)
    if downstream.parse(config.data.mixture) is None:
        return None
    name, fmt = downstream.resolve(config.data.mixture, config.model.arch)
    if fmt == "t2t":
        return Seq2SeqTask(config.model)
    features = _features(name)
    if config.model.num_labels != features.num_labels:
        raise ConfigError(f"{name}'s {features.head} head needs model.num_labels={features.num_labels}, "
                          f"not {config.model.num_labels} (`plmjax train --task {name}` sets it)")
    return HEADS[features.head](config.model)
