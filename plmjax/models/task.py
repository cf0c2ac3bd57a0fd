"""Model tasks: a network plus the loss it trains (t5x's "model"), and the one way to make them from a config.

A model task maps a model-ready feature batch to (loss, metrics), declares which sown collections its loss
reads (`collections`: e.g. attention weights), and refuses bad host batches before they reach a device.
Which one a config trains comes from its objective (plmjax.objectives.registry) or, with a benchmark in
data.mixture, from the benchmark's head (plmjax.models.finetuning); `objective.regularizers` wrap it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from plmjax.config import Config, ModelConfig, names
from plmjax.layers import moe


class ModelTask:
    """Base: `init` variables from a batch, `loss` on a batch, `validate` a host batch."""

    token_keys: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()  # sown collections (besides MoE statistics) that the loss reads

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.module = self.make_module(cfg)

    @classmethod
    def from_config(cls, config: Config) -> ModelTask:
        return cls(config.model)

    def make_module(self, cfg: ModelConfig) -> nn.Module:
        raise NotImplementedError

    def model_inputs(self, batch) -> dict[str, Any]:
        raise NotImplementedError

    def metrics(self, outputs, batch) -> dict[str, jax.Array]:
        """The objective's loss (`loss`) and metrics from the model's outputs."""
        raise NotImplementedError

    def init(self, rng, batch):
        return self.module.init({"params": rng, "dropout": rng}, **self.model_inputs(batch))

    def forward(self, variables, batch, deterministic: bool, rngs=None, collections: tuple[str, ...] = ()):
        """(model outputs, sown collections: MoE statistics, `self.collections` and `collections`, each {} if unsown)."""
        wanted = (moe.COLLECTION, *self.collections, *collections)
        outputs, sown = self.module.apply(variables, **self.model_inputs(batch), deterministic=deterministic,
                                          rngs=rngs, mutable=list(dict.fromkeys(wanted)))
        return outputs, {name: sown.get(name, {}) for name in wanted}

    def loss_terms(self, outputs, sown, batch) -> dict[str, jax.Array]:
        """`metrics` plus every term the sown collections add to `loss` (MoE router losses here)."""
        metrics = self.metrics(outputs, batch)
        if sown.get(moe.COLLECTION):
            metrics = moe.add_router_losses(metrics, sown[moe.COLLECTION], self.cfg)
        return metrics

    def rngs(self, rng, train: bool) -> dict | None:
        """The random streams a forward pass draws from `rng`: dropout, only when training."""
        return {"dropout": rng} if train else None

    def loss(self, params, batch, dropout_rng=None, train: bool = False):
        """(loss, metrics); dropout is on only when `train`."""
        outputs, sown = self.forward({"params": params}, batch, deterministic=not train,
                                     rngs=self.rngs(dropout_rng, train))
        metrics = self.loss_terms(outputs, sown, batch)
        return metrics["loss"], metrics

    def validate(self, batch: dict[str, np.ndarray]) -> None:
        """Refuse token ids outside [0, vocab_size) with an error naming the feature and the id."""
        for key in self.token_keys:
            if key not in batch:
                raise ValueError(f"batch is missing feature {key!r}; it has {sorted(batch)}")
            ids = np.asarray(batch[key])
            if ids.size and (ids.max() >= self.cfg.vocab_size or ids.min() < 0):
                bad = ids.max() if ids.max() >= self.cfg.vocab_size else ids.min()
                raise ValueError(
                    f"feature {key!r} holds token id {int(bad)} outside the model's vocabulary "
                    f"[0, {self.cfg.vocab_size}); check that the tokenizer matches model.vocab_size"
                )


class WrappedTask(ModelTask):
    """`inner` seen through a wrapper: everything the subclass does not override (module, inputs, validation,
    predictions, random streams) is the inner task's, so any task can be wrapped."""

    def __init__(self, inner: ModelTask, collections: tuple[str, ...] = ()):
        self.inner = inner
        self.cfg, self.module, self.token_keys = inner.cfg, inner.module, inner.token_keys
        self.collections = tuple(dict.fromkeys((*inner.collections, *collections)))

    def __getattr__(self, name):  # what the wrapper does not define is the inner task's (predict, label_keys, ...)
        return getattr(self.inner, name)

    def model_inputs(self, batch):
        return self.inner.model_inputs(batch)

    def init(self, rng, batch):
        return self.inner.init(rng, batch)

    def rngs(self, rng, train: bool):
        return self.inner.rngs(rng, train)

    def forward(self, variables, batch, deterministic: bool, rngs=None, collections: tuple[str, ...] = ()):
        return self.inner.forward(variables, batch, deterministic, rngs, (*self.collections, *collections))

    def metrics(self, outputs, batch):
        return self.inner.metrics(outputs, batch)

    def loss_terms(self, outputs, sown, batch):
        return self.inner.loss_terms(outputs, sown, batch)

    def validate(self, batch) -> None:
        self.inner.validate(batch)


class RegularizedTask(WrappedTask):
    """`inner` whose loss adds `weight * penalty(outputs, sown, batch)`, reading the collections the penalty names."""

    def __init__(self, inner: ModelTask, name: str, penalty, weight: float, collections: tuple[str, ...] = ()):
        super().__init__(inner, collections)
        self.name, self.penalty, self.weight = name, penalty, weight

    def loss_terms(self, outputs, sown, batch):
        metrics = self.inner.loss_terms(outputs, sown, batch)
        term = self.penalty(outputs, sown, batch)
        if not self.weight:  # reported, but no gradient to compute: the step is the inner task's exactly
            return dict(metrics, **{f"{self.name}_loss": jax.lax.stop_gradient(term)})
        return dict(metrics, **{f"{self.name}_loss": term}, loss=metrics["loss"] + self.weight * term)


def make_model_task(config: Config) -> ModelTask:
    """The model task a config trains: a benchmark's head when data.mixture names one, else the objective's;
    then wrapped by each of objective.regularizers in turn."""
    from plmjax.models.finetuning import benchmark_task
    from plmjax.objectives import registry

    task = benchmark_task(config) if config.data.mixture or config.data.task_file else None
    if task is None:
        task = registry.for_config(config).model_task(config)
    for name in names(config.objective.regularizers):
        task = registry.REGULARIZERS[name].wrap(task, registry.options(config, name))
    return task
