"""Ablations of plmjax's train step, timed in turns in one process: where the step's time goes.

    python benchmarks/experiments.py [--model bert_base] [--repeats 3] [--variants baseline,no_dropout,...]

Each variant is the same preset with config overrides or a benchmark-local change; none edits the
library. Changes proposed for plmjax/layers are measured here first, each with the parameter tree
unchanged: `fused_qkv` (one matmul against the stacked query/key/value kernels),
`no_ffn_inner_dropout` (BERT and GPT-2 have no dropout inside the FFN; T5 does) and `dropout_8bit` /
`dropout_16bit` (keep masks from 8- or 16-bit random integers, several per random word).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import plmjax_steps  # noqa: E402
import torch  # noqa: E402
import torch_steps  # noqa: E402
import workloads  # noqa: E402
from measure import interleaved  # noqa: E402
from peak import matmul_peak  # noqa: E402

from plmjax.layers import attention, ffn  # noqa: E402


class FusedQKVAttention(attention.SoftmaxAttention):
    """SoftmaxAttention whose self-attention runs one [embed, 3*heads*kv] matmul; same parameters."""

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, bias=None, deterministic: bool = True, decode: bool = False):
        if inputs_q is not inputs_kv or decode or self.cfg.kv_prefix:
            return super().__call__(inputs_q, inputs_kv, bias, deterministic, decode)
        cfg = self.cfg
        heads, head_dim = cfg.num_heads, cfg.kv_dim
        empty = inputs_q[:, :0]  # declares (init) or reads (apply) each projection's parameters, computing nothing
        projections = []
        for name, scale in (("query", 1.0 if cfg.scale_attention else 1.0 / head_dim), ("key", 1.0), ("value", 1.0)):
            module = attention.make_projection(cfg, (heads, head_dim), ("embed",), ("heads", "kv"), name,
                                               init_scale=scale)
            module(empty)
            projections.append(nn.meta.unbox(module.variables["params"]))
        kernel = jnp.stack([p["kernel"] for p in projections], axis=1).astype(inputs_q.dtype)
        qkv = jnp.einsum("ble,ethd->blthd", inputs_q, kernel)
        if cfg.use_bias:
            qkv = qkv + jnp.stack([p["bias"] for p in projections]).astype(qkv.dtype)
        query, key, value = (qkv[:, :, i] for i in range(3))
        if cfg.scale_attention:
            query = query / jnp.sqrt(head_dim).astype(query.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias
        weights = jax.nn.softmax(logits, axis=-1).astype(query.dtype)
        weights = nn.Dropout(cfg.attention_dropout_rate)(weights, deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return attention.make_projection(cfg, cfg.hidden_size, ("heads", "kv"), ("embed",), "out")(context)


attention.ATTENTION_KINDS["fused_qkv"] = FusedQKVAttention


class FeedForwardNoInnerDropout(ffn.FeedForward):
    """FeedForward without dropout on its hidden layer, as in BERT and GPT-2 (T5 has it); same parameters."""

    def __call__(self, x, deterministic: bool = True):
        return super().__call__(x, deterministic=True)  # the residual dropout after `wo` stays


ffn.FFN_KINDS["dense_no_inner_dropout"] = FeedForwardNoInnerDropout


@contextlib.contextmanager
def patched(owner, name: str, value):
    """Replace `owner.name` while a step is traced (tracing happens when it is built)."""
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


ORIGINAL_DROPOUT = nn.Dropout.__call__


def packed_dropout(bits: int):
    """nn.Dropout whose keep test compares `bits`-bit integers, 32 // bits of them per random word.

    The partitionable threefry makes one 32-bit word per element whatever the dtype asked for, so
    plain dropout pays a full threefry2x32 per activation; this pays one per 32 // bits activations.
    The drop rate is rounded to a multiple of 2**-bits (0.1 -> 26/256 with 8 bits).
    """

    def call(self, inputs, deterministic=None, rng=None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        per_word = 32 // bits
        if deterministic or self.rate == 0.0 or inputs.shape[-1] % per_word:
            return ORIGINAL_DROPOUT(self, inputs, deterministic, rng)
        rng = self.make_rng(self.rng_collection) if rng is None else rng
        words = jax.random.bits(rng, (*inputs.shape[:-1], inputs.shape[-1] // per_word), jnp.uint32)
        narrow = jax.lax.bitcast_convert_type(words, jnp.dtype(f"uint{bits}")).reshape(inputs.shape)
        threshold = round(self.rate * 2**bits)
        kept = 1.0 - threshold / 2**bits  # the rate actually applied, so the expectation stays exact
        return jnp.where(narrow >= threshold, inputs / kept, jnp.zeros_like(inputs)).astype(inputs.dtype)

    return patched(nn.Dropout, "__call__", call)


@contextlib.contextmanager
def prng_impl(name: str):
    """Build a step whose dropout keys use another PRNG implementation (the key is made at build time)."""
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", name)
    try:
        yield
    finally:
        jax.config.update("jax_default_prng_impl", previous)


VARIANTS = {  # name -> (config overrides, build context, mode)
    "baseline": ((), contextlib.nullcontext, "train"),
    "no_dropout": (("model.dropout_rate=0.0", "model.attention_dropout_rate=0.0"), contextlib.nullcontext, "train"),
    "rbg_prng": ((), lambda: prng_impl("unsafe_rbg"), "train"),
    "no_ffn_inner_dropout": (("model.ffn_kind=dense_no_inner_dropout",), contextlib.nullcontext, "train"),
    "no_attention_dropout": (("model.attention_dropout_rate=0.0",), contextlib.nullcontext, "train"),
    "dropout_16bit": ((), lambda: packed_dropout(16), "train"),
    "dropout_8bit": ((), lambda: packed_dropout(8), "train"),
    "no_ffn_inner_dropout+dropout_8bit": (("model.ffn_kind=dense_no_inner_dropout",), lambda: packed_dropout(8),
                                          "train"),
    "fused_qkv": (("model.attention_kind=fused_qkv",), contextlib.nullcontext, "train"),
    "scan_layers": (("model.scan_layers=true",), contextlib.nullcontext, "train"),
    "remat_minimal": (("model.remat=minimal",), contextlib.nullcontext, "train"),
    "bfloat16": (("model.dtype=bfloat16",), contextlib.nullcontext, "train"),
    "no_clip": (("optimizer.clip_grad_norm=0.0",), contextlib.nullcontext, "train"),
    "eval_forward": ((), contextlib.nullcontext, "infer"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert_base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch train step")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    peak = matmul_peak()
    runners = {}
    for name in args.variants.split(","):
        overrides, context, mode = VARIANTS[name]
        config = workloads.load(args.model, args.batch, args.seq, overrides)
        with context():
            runners[name] = plmjax_steps.build(config, workloads.make_batch(config), (mode,))[mode]
        print(f"built {name}: compile {runners[name].setup_s:.1f} s", file=sys.stderr, flush=True)
    if args.torch:
        config = workloads.load(args.model, args.batch, args.seq)
        runners["pytorch"] = torch_steps.build(config, workloads.make_batch(config), ("train",))["train"]
    seconds, _ = interleaved(runners, args.repeats, steps=1)
    base = seconds.get("baseline")
    print(f"peak {peak / 1e9:.0f} GFLOP/s, load {os.getloadavg()[0]:.1f}")
    print("| variant | step s | tokens/s | vs baseline | MFU |\n|---|---:|---:|---:|---:|")
    for name, s in seconds.items():
        vs = f"{base / s:.2f}" if base else "–"
        print(f"| {name} | {s:.3f} | {args.batch * args.seq / s:.0f} | {vs} | {runners[name].flops / s / peak:.0%} |")


if __name__ == "__main__":
    main()
