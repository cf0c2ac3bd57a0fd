"""Ablations of plmjax's train step, timed in turns in one process: where the step's time goes.

    python benchmarks/experiments.py [--model bert_base] [--repeats 3] [--variants baseline,no_dropout,...]

Each variant is the same preset with config overrides or a benchmark-local change; none edits the
library. `dropout_bits=32` is flax's exact-rate dropout; `ffn_dropout` adds T5's dropout inside the FFN.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import setup_process  # noqa: F401  (first: before JAX or PyTorch start threads)
import jax
import plmjax_steps
import torch
import torch_steps
import workloads
from measure import interleaved
from peak import matmul_peak


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
    "no_attention_dropout": (("model.attention_dropout_rate=0.0",), contextlib.nullcontext, "train"),
    "dropout_bits=32": (("runtime.dropout_bits=32",), contextlib.nullcontext, "train"),
    "dropout_bits=8": (("runtime.dropout_bits=8",), contextlib.nullcontext, "train"),
    "ffn_dropout": (("model.ffn_dropout=true",), contextlib.nullcontext, "train"),
    "rbg_prng": ((), lambda: prng_impl("unsafe_rbg"), "train"),
    "no_layer_grad_barrier": (("runtime.materialize_layer_grads=false",), contextlib.nullcontext, "train"),
    "plain_kernel_grads": (("runtime.kernel_grads_in_layout=false",), contextlib.nullcontext, "train"),
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
