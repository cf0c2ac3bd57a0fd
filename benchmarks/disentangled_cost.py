"""What disentangled attention costs a train step against softmax attention, at sequence lengths 128 to 1024.

The same encoder (deberta_tiny's shape: 2 layers, hidden 128, 2 heads) with attention_kind=softmax and learned
absolute positions (BERT), and with attention_kind=disentangled (c2p + p2c over 256 log buckets, DeBERTa v3's),
trains MLM on a batch of the same number of tokens at each length, in alternating rounds on one device:

    python benchmarks/disentangled_cost.py [--lengths 128,256,512,1024] [--tokens 8192] [--rounds 3] [--steps 3]

Prints tokens/s (median), the compiled step's peak temporary memory (XLA's memory analysis: what the step needs
beyond its arguments), and the disentangled / softmax ratios.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import numpy as np
from moe_vs_dense import Run

from plmjax.config import load_config
from plmjax.objectives.mlm import mask_tokens

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
KINDS = {
    "softmax": ["model.attention_kind=softmax", "model.position_kind=learned", "model.position_input=true"],
    "disentangled": ["model.position_buckets=256"],
}


def config_for(kind: str, length: int, tokens: int):
    return load_config(CONFIGS / "deberta_tiny.py", [
        *KINDS[kind], "model.mask_decoder_passes=0", f"model.max_length={length}", f"data.seq_length={length}",
        f"data.batch_size={max(tokens // length, 1)}", "model.dropout_rate=0", "model.attention_dropout_rate=0"])


def mlm_batch(config):
    rng = np.random.default_rng(0)
    shape = (config.data.batch_size, config.data.seq_length)
    ids = rng.integers(5, config.model.vocab_size, shape).astype(np.int32)
    predictions = max(config.data.seq_length * 15 // 100, 1)
    batch = mask_tokens(ids, rng, mask_rate=0.15, max_predictions=predictions, mask_id=4,
                        vocab_size=config.model.vocab_size, special_ids={0, 1, 2, 3, 4})
    return dict(batch, segment_ids=np.zeros(shape, np.int32), attention_mask=np.ones(shape, np.int32))


def temp_bytes(run: Run) -> int:
    """The compiled step's temporary buffers (XLA's memory analysis)."""
    compiled = run.step.lower(run.state, run.batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="128,256,512,1024")
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per batch at every length")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.tokens} tokens a batch, {args.rounds} alternating rounds of {args.steps} train steps, "
          f"{jax.devices()[0].platform} x1")
    print("| length | batch | softmax tokens/s | disentangled tokens/s | speed ratio | softmax temp MB | "
          "disentangled temp MB | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in (int(n) for n in args.lengths.split(",")):
        runs = {}
        for kind in KINDS:
            config = config_for(kind, length, args.tokens)
            runs[kind] = Run(config, mlm_batch(config))
        speeds = {kind: [] for kind in runs}
        for _ in range(args.rounds):
            for kind, run in runs.items():
                speeds[kind].append(run.tokens_per_s(args.steps))
        speed = {kind: float(np.median(s)) for kind, s in speeds.items()}
        memory = {kind: temp_bytes(run) / 2**20 for kind, run in runs.items()}
        batch = runs["softmax"].config.data.batch_size
        print(f"| {length} | {batch} | {speed['softmax']:.0f} | {speed['disentangled']:.0f} | "
              f"{speed['disentangled'] / speed['softmax']:.2f} | {memory['softmax']:.0f} | "
              f"{memory['disentangled']:.0f} | {memory['disentangled'] / memory['softmax']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
