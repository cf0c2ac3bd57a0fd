"""AdamW or LAMB with linear warmup, a decay schedule and weight decay on weights only (clipping: training.step)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from plmjax.config import OptimizerConfig

NO_DECAY = ("bias", "scale")  # leaf names that weight decay must not shrink: biases and norm scales


def make_schedule(cfg: OptimizerConfig, num_steps: int) -> optax.Schedule:
    """Learning rate per step: linear warmup from 0 over `warmup_steps`, then `cfg.schedule`'s decay."""
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    decay_steps = max(num_steps - warmup, 1)  # a run shorter than its warmup never reaches the decay
    if cfg.schedule == "linear":
        decay = optax.linear_schedule(lr, 0.0, decay_steps)
    elif cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps)
    elif cfg.schedule == "inverse_sqrt":
        decay = _inverse_sqrt(lr, warmup)
    else:
        decay = optax.constant_schedule(lr)
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _inverse_sqrt(lr: float, warmup: int) -> optax.Schedule:
    """T5's rsqrt decay lr * sqrt(warmup / step) after warmup; `count` restarts at 0 when warmup ends."""
    return lambda count: lr * jnp.sqrt(max(warmup, 1) / jnp.maximum(count + warmup, 1))


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every leaf except those whose last dict key is `bias` or `scale`.

    Decides by name, not ndim, so biases stacked over layers by nn.scan are still excluded. Works on
    plain arrays ({'params': {...}} or the inner dict) and on nn.Partitioned boxes alike (the box's own
    `value` attribute is skipped); the mask has the same tree structure as its input.
    """

    def weight(path, _) -> bool:
        names = [key.key for key in path if isinstance(key, jax.tree_util.DictKey)]
        return not names or names[-1] not in NO_DECAY

    return jax.tree_util.tree_map_with_path(weight, params)


def make_optimizer(cfg: OptimizerConfig, num_steps: int) -> optax.GradientTransformation:
    """AdamW (or LAMB, ALBERT's) on the schedule, decaying weights only. Global-norm clipping
    (optimizer.clip_grad_norm) is a step of its own (training.step.apply_gradients), so that a gradient function
    may replace it (e.g. per-example)."""
    return {"adamw": optax.adamw, "lamb": optax.lamb}[cfg.kind](
        make_schedule(cfg, num_steps),
        b1=cfg.b1,
        b2=cfg.b2,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        mask=decay_mask,
    )
