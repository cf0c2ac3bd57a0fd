"""A toy regularizer reading sown attention weights: `objective.regularizers=attention_entropy` adds
objective.attention_entropy.weight times the mean entropy of every self-attention distribution."""

import dataclasses

import jax
import jax.numpy as jnp

from plmjax.layers.attention import ATTENTION_WEIGHTS
from plmjax.models.task import RegularizedTask
from plmjax.objectives.registry import Regularizer, register_regularizer


@dataclasses.dataclass
class EntropyOptions:
    weight: float = 0.0


def mean_entropy(sown):
    """Mean over layers, heads, queries and rows of -sum_k p log p (padding keys have p = 0)."""
    weights = jax.tree.leaves(sown[ATTENTION_WEIGHTS])
    entropies = [-(w * jnp.log(jnp.maximum(w, 1e-30))).sum(-1).mean() for w in weights]
    return sum(entropies) / len(entropies)


def wrap(task, options):
    return RegularizedTask(task, "attention_entropy", lambda outputs, sown, batch: mean_entropy(sown),
                           options.weight, collections=(ATTENTION_WEIGHTS,))


register_regularizer(Regularizer("attention_entropy", EntropyOptions, wrap))
