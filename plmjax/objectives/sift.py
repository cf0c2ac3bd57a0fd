"""SiFT: scale-invariant fine-tuning (DeBERTa), an adversarial term on the normalised input embeddings.

`objective.regularizers=sift` with objective.sift.weight > 0 adds, to any task's training loss, weight times
the divergence between the model's outputs and its outputs when each token's normalised embedding is
pushed by a small adversarial `delta` (virtual adversarial training in the space after the embedding
LayerNorm's normalisation and before its scale and bias, so the perturbation's size means the same for
every model and every token).

The reference is microsoft/DeBERTa DeBERTa/sift/sift.py (PerturbationLayer, AdversarialLearner,
symmetric_kl) as DeBERTa/apps/run.py uses it; the keys are run.py's: weight = vat_lambda, step_size =
vat_learning_rate, init = vat_init_perturbation. As there:

- the perturbed passes replace the input x of the embedding norm (the `norm` of an `InputEmbedder`) by
  `LN0(x) + delta`, LN0 a LayerNorm without scale and bias, and then run the real norm on it (the double
  LayerNorm); LN0(x) is detached, so the perturbed passes send the embedding tables no gradient;
- delta starts at clip(N(0, 1) * init, -2 init, 2 init) in float32; an ascent step is
  `delta += step_size * g / (1e-6 + max |g| over the hidden axis)`, g the gradient w.r.t. delta of the summed
  divergence to the detached clean outputs with the parameters held fixed, skipped when g is not finite;
- the term is the mean over rows of symmetric_kl(perturbed outputs, clean outputs), the clean outputs not
  detached; every pass is in train mode with its own dropout masks (a task's other random streams, such as
  the key of ELECTRA's generator samples, are the clean pass's in every pass, so the passes' inputs agree).

Where this differs or adds:

- the clean pass is the plain model (one LayerNorm; the reference runs LN(LN0(x)) there too), so weight 0
  is plain training bit for bit, and LN0 uses model.norm_eps (the reference: 1e-7); with model.norm_kind=
  rmsnorm LN0 is an RMS normalisation without scale, so that norm(LN0(x)) is still close to norm(x);
- `steps` ascent steps (the reference: one), and `epsilon` > 0 projects each token's delta onto the L2
  sphere of that radius after each step (the VAT-style projected perturbation; 0: the reference's step);
- outputs with one value per row (regression, a single logit) use the squared error, where the symmetric
  KL of one logit is identically 0 (the reference then adds nothing); a dict of outputs adds the term of
  every value whose key ends in "logits", summed; per-element sigmoid logits (SIGMOID_LOGITS) compare as
  two-class logits [0, z];
- LN0(x) + delta reaches the norm in float32 (the reference casts it back to the compute dtype, where with
  bfloat16 a step of 1e-4 next to values near 1 would round away);
- the embedding norm is perturbed at each of its calls in a pass (e.g. an encoder-decoder's encoder and
  decoder inputs), each call with its own delta.

SiFT must be the last of objective.regularizers: a RegularizedTask around it would compute its loss with
ModelTask.loss, without SiFT's passes, so training with it inside another is refused.

Cost per training step: 2 + steps forward passes (clean, one per ascent step, the final perturbed one:
3 with steps=1) and 1 + steps backward passes. Evaluation and weight 0 cost nothing extra.

symmetric_kl is the reference's: two cross-entropies with detached weights. Its gradients are those of
KL(p_clean || p_pert) w.r.t. the perturbed logits and KL(p_pert || p_clean) w.r.t. the clean ones, but its
value is not a divergence's: for identical logits it is twice their entropy, not 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from plmjax.config import ConfigError
from plmjax.layers.embeddings import InputEmbedder
from plmjax.models.task import ModelTask, WrappedTask
from plmjax.objectives.registry import Regularizer, register_regularizer

NAME = "sift"
NO_NORM = ("SiFT perturbs the input of the embedding LayerNorm (the norm of the model's InputEmbedder), and "
           "model.embedding_norm=false has none: set model.embedding_norm=true or drop sift from "
           "objective.regularizers")
_INIT_STREAM = 0  # fold_in(dropout_rng, 0): delta's initial draw (the perturbed passes fold dropout with 1, 2, ...)


@dataclasses.dataclass
class SiftOptions:
    weight: float = 0.0  # vat_lambda: the adversarial term's weight (0: off)
    step_size: float = 1e-4  # vat_learning_rate: each ascent step moves each token by at most this per coordinate
    init: float = 1e-2  # vat_init_perturbation: std of the initial perturbation (clipped at 2 init)
    steps: int = 1  # ascent steps before the term is computed
    epsilon: float = 0.0  # > 0: after each step, each token's perturbation has L2 norm epsilon

    def __post_init__(self):
        for key, ok, rule in (("weight", self.weight >= 0, ">= 0"), ("step_size", self.step_size > 0, "> 0"),
                              ("init", self.init > 0, "> 0"), ("steps", self.steps >= 1, ">= 1"),
                              ("epsilon", self.epsilon >= 0, ">= 0")):
            if not ok:
                raise ConfigError(f"objective.{NAME}.{key}={getattr(self, key)} must be {rule}")


# ---------------------------------------------------------------- pure parts


def symmetric_kl(logits, target):
    """Per row of [-1, C]: sum(p_t * -log_softmax(logits)) + sum(p_s * -log_softmax(target)), p_t = softmax(target)
    and p_s = softmax(logits) both detached (the reference's, in float32)."""
    logits = jnp.reshape(logits, (-1, logits.shape[-1])).astype(jnp.float32)
    target = jnp.reshape(target, (-1, target.shape[-1])).astype(jnp.float32)
    log_s, log_t = jax.nn.log_softmax(logits, -1), jax.nn.log_softmax(target, -1)
    p_t, p_s = jax.lax.stop_gradient(jnp.exp(log_t)), jax.lax.stop_gradient(jnp.exp(log_s))
    return (p_t * -log_s).sum(-1) + (p_s * -log_t).sum(-1)


# Outputs that hold one sigmoid logit per element, not a distribution over their last axis: compared as the
# two-class logits [0, z]. (ELECTRA's discriminator; a task's outputs do not say which kind they are.)
SIGMOID_LOGITS = ("detection_logits",)


def _scores(outputs) -> list[tuple[str, jax.Array]]:
    """The outputs the divergence compares: a dict's values whose key ends in "logits", or the array itself."""
    if isinstance(outputs, Mapping):
        keys = sorted(k for k in outputs if k.endswith("logits"))
        if not keys:
            raise ValueError(f"SiFT compares the model's logits, and these outputs have none: {sorted(outputs)}")
        return [(k, outputs[k]) for k in keys]
    return [("", outputs)]


def row_divergences(outputs, target) -> list[jax.Array]:
    """Per output (see _scores), its per-row divergence from `target`'s: symmetric_kl over the last axis; the
    squared error for one value per row (predictions [batch], or a last axis of size 1); for SIGMOID_LOGITS,
    symmetric_kl of the two-class logits [0, z] per element."""
    rows = []
    for (key, out), (_, tgt) in zip(_scores(outputs), _scores(target)):
        if key in SIGMOID_LOGITS:
            two = lambda z: jnp.stack([jnp.zeros_like(z), z], -1)  # noqa: E731
            rows.append(symmetric_kl(two(out), two(tgt)))
        elif out.ndim == 1 or out.shape[-1] == 1:
            diff = out.astype(jnp.float32) - tgt.astype(jnp.float32)
            rows.append(jnp.square(diff).reshape(-1))
        else:
            rows.append(symmetric_kl(out, tgt))
    return rows


def divergence(outputs, target, reduce=jnp.mean) -> jax.Array:
    """The sum over outputs of `reduce` (mean: the term; sum: the ascent's objective) of their row divergences."""
    return sum(reduce(r) for r in row_divergences(outputs, target))


def normalize_without_affine(x, eps: float, norm_kind: str = "layernorm"):
    """LN0: x normalised over its last axis, in float32, with no scale or bias (RMS for norm_kind=rmsnorm)."""
    x = x.astype(jnp.float32)
    if norm_kind == "rmsnorm":
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + eps)
    x = x - jnp.mean(x, -1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + eps)


def initial_delta(rng, shape, init: float):
    """clip(N(0, 1) * init, -2 init, 2 init), float32."""
    return jnp.clip(jax.random.normal(rng, shape, jnp.float32) * init, -2 * init, 2 * init)


def project(delta, epsilon: float):
    """Each token's (last axis) vector rescaled to L2 norm epsilon."""
    norm = jnp.sqrt(jnp.sum(jnp.square(delta), -1, keepdims=True))
    return delta * (epsilon / jnp.maximum(norm, 1e-20))


def ascent_step(delta, grad, step_size: float, epsilon: float = 0.0):
    """delta + step_size * grad / (1e-6 + max |grad| over the last axis), then projected when epsilon > 0;
    delta unchanged when grad is not finite."""
    step = grad / (1e-6 + jnp.max(jnp.abs(grad), -1, keepdims=True))
    moved = delta + step_size * step
    if epsilon > 0:
        moved = project(moved, epsilon)
    return jnp.where(jnp.all(jnp.isfinite(grad)), moved, delta)


# ---------------------------------------------------------------- the embedding norm, found and perturbed


def _is_embedding_norm(context) -> bool:
    module = context.module
    return (context.method_name == "__call__" and module.name == "norm"
            and isinstance(module.parent, InputEmbedder))


def _recording(shapes: list):
    """An interceptor that appends the shape of each embedding-norm input to `shapes` and changes nothing."""

    def interceptor(next_fun, args, kwargs, context):
        if _is_embedding_norm(context):
            shapes.append(tuple(args[0].shape))
        return next_fun(*args, **kwargs)

    return interceptor


def _perturbing(deltas, eps: float, norm_kind: str):
    """An interceptor that feeds the embedding norm's i-th call LN0(x) (detached) + deltas[i] instead of x."""
    calls = iter(deltas)

    def interceptor(next_fun, args, kwargs, context):
        if not _is_embedding_norm(context):
            return next_fun(*args, **kwargs)
        x, *rest = args
        delta = next(calls, None)
        if delta is None or delta.shape != x.shape:
            raise ValueError("the embedding norm was called differently in SiFT's perturbed pass than in its "
                             "clean pass")
        normalized = jax.lax.stop_gradient(normalize_without_affine(x, eps, norm_kind))
        return next_fun(normalized + delta, *rest, **kwargs)  # float32: the norm computes in float32 anyway

    return interceptor


# ---------------------------------------------------------------- the task wrapper


class SiftTask(WrappedTask):
    """`inner` whose training loss adds options.weight * SiFT's adversarial term; all else is the inner task's.

    loss = clean_pass, then perturbation (the final delta, a constant), then loss_given (the inner loss plus
    the weighted term at that delta): split so that each can be called on its own.
    """

    def __init__(self, inner: ModelTask, options: SiftOptions):
        super().__init__(inner)
        self.options = options
        if options.weight and not inner.cfg.embedding_norm:
            raise ConfigError(NO_NORM)

    def forward(self, variables, batch, deterministic: bool, rngs=None, collections: tuple[str, ...] = ()):
        if not deterministic and self.options.weight:
            # Only ModelTask.loss runs a training forward: a regularizer wrapping this one computes its loss
            # without SiFT's passes, so the term would silently vanish.
            raise ConfigError(f"{NAME} must be the last of objective.regularizers: a regularizer wrapping it "
                              "trains without its adversarial term")
        return super().forward(variables, batch, deterministic, rngs, collections)

    # -- the passes

    def _pass(self, params, batch, dropout_rng, index: int, interceptor):
        """A training forward pass: the inner task's random streams from `dropout_rng`, its dropout redrawn
        (folded with `index`) unless index is 0, every other stream (e.g. a generator's samples) as is."""
        rngs = self.inner.rngs(dropout_rng, True)
        if index and rngs and rngs.get("dropout") is not None:
            rngs = dict(rngs, dropout=jax.random.fold_in(rngs["dropout"], index))
        with nn.intercept_methods(interceptor):
            return self.inner.forward({"params": params}, batch, deterministic=False, rngs=rngs)

    def clean_pass(self, params, batch, dropout_rng):
        """(outputs, sown, shapes): the plain training forward pass and the shape of each embedding-norm input."""
        shapes: list[tuple[int, ...]] = []
        outputs, sown = self._pass(params, batch, dropout_rng, 0, _recording(shapes))
        if not shapes:
            raise ConfigError(NO_NORM)
        return outputs, sown, tuple(shapes)

    def perturbed_outputs(self, params, batch, dropout_rng, deltas, index: int = 0):
        """The outputs of a training pass whose embedding norm sees LN0(x) + delta (one delta per call), with the
        dropout masks of pass `index` (0: the clean pass's; SiFT's own passes are 1, 2, ...)."""
        cfg = self.cfg
        return self._pass(params, batch, dropout_rng, index, _perturbing(deltas, cfg.norm_eps, cfg.norm_kind))[0]

    def perturbation(self, params, batch, dropout_rng, clean_outputs, shapes):
        """The final deltas (a tuple, one per embedding-norm call), detached: `steps` ascent steps from the
        initial draw, on the summed divergence to the detached clean outputs with the parameters held fixed."""
        opts = self.options
        init_rng = jax.random.fold_in(dropout_rng, _INIT_STREAM)
        deltas = tuple(initial_delta(jax.random.fold_in(init_rng, i), shape, opts.init)
                       for i, shape in enumerate(shapes))
        fixed, target = jax.lax.stop_gradient(params), jax.lax.stop_gradient(clean_outputs)
        for step in range(opts.steps):
            objective = lambda d: divergence(  # noqa: E731
                self.perturbed_outputs(fixed, batch, dropout_rng, d, step + 1), target, jnp.sum)
            grads = jax.grad(objective)(deltas)
            deltas = tuple(ascent_step(d, g, opts.step_size, opts.epsilon) for d, g in zip(deltas, grads))
        return jax.lax.stop_gradient(deltas)

    def adversarial_loss(self, params, batch, dropout_rng, clean_outputs, deltas):
        """The term: mean over rows of the divergence of the outputs at `deltas` (live parameters) from the clean
        outputs (not detached, as the reference)."""
        outputs = self.perturbed_outputs(params, batch, dropout_rng, deltas, self.options.steps + 1)
        return divergence(outputs, clean_outputs)

    def loss_given(self, params, batch, dropout_rng, outputs, sown, deltas):
        """(inner loss + weight * adversarial_loss at `deltas`, metrics with `sift_loss`), from the clean pass."""
        metrics = self.inner.loss_terms(outputs, sown, batch)
        term = self.adversarial_loss(params, batch, dropout_rng, outputs, deltas)
        loss = metrics["loss"] + self.options.weight * term
        return loss, dict(metrics, loss=loss, **{f"{NAME}_loss": term})

    def loss(self, params, batch, dropout_rng=None, train: bool = False):
        """The inner task's (loss, metrics), plus SiFT's weighted term when training with weight > 0."""
        if not train or not self.options.weight:
            return self.inner.loss(params, batch, dropout_rng, train)
        if dropout_rng is None:
            raise ValueError("SiFT's training loss needs dropout_rng: its passes draw dropout and the perturbation")
        outputs, sown, shapes = self.clean_pass(params, batch, dropout_rng)
        deltas = self.perturbation(params, batch, dropout_rng, outputs, shapes)
        return self.loss_given(params, batch, dropout_rng, outputs, sown, deltas)


register_regularizer(Regularizer(NAME, SiftOptions, SiftTask))
