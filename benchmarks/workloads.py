"""The benchmarked presets at benchmark shapes, and batches made by plmjax's own objectives."""

from __future__ import annotations

import pathlib

import numpy as np

from plmjax import aot
from plmjax.config import Config, apply_overrides, load_config
from plmjax.objectives.causal_lm import shift_for_causal_lm
from plmjax.objectives.mlm import mask_tokens
from plmjax.objectives.span_corruption import compute_input_and_target_lengths, span_corrupt

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
MODELS = ("bert_base", "t5_small", "gpt2_small")
SPECIAL_IDS = (0, 1, 2, 3, 4)  # pad, eos/unk, [CLS], [SEP], [MASK] stand-ins
CLS, SEP, MASK = 2, 3, 4


def load(model: str, batch: int, seq_length: int, overrides: tuple[str, ...] = ()) -> Config:
    """The preset `configs/<model>.py` at this batch and sequence length (positions grown if needed)."""
    config = load_config(CONFIGS / f"{model}.py", [f"data.batch_size={batch}", f"data.seq_length={seq_length}",
                                                   *overrides])
    if config.model.position_kind == "learned" and config.model.max_length < seq_length:
        config = apply_overrides(config, [f"model.max_length={seq_length}"])
    return config


def make_batch(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens through the config's objective, shaped exactly as `aot.batch_spec(config)` says."""
    rng = np.random.default_rng(seed)
    batch, length, vocab = config.data.batch_size, config.data.seq_length, config.model.vocab_size
    mlm, spans = config.objective.mlm, config.objective.span_corruption
    tokens = lambda n: rng.integers(len(SPECIAL_IDS), vocab - 100, (batch, n)).astype(np.int32)  # noqa: E731
    if config.model.arch == "encoder":
        ids = tokens(length)
        ids[:, 0], ids[:, length // 2], ids[:, -1] = CLS, SEP, SEP
        features = mask_tokens(ids, rng, mask_rate=mlm.mask_rate, max_predictions=mlm.max_predictions,
                               mask_id=MASK, vocab_size=vocab, special_ids=SPECIAL_IDS)
        segments = (np.arange(length) > length // 2).astype(np.int32)
        features.update(segment_ids=np.broadcast_to(segments, ids.shape).copy(), attention_mask=np.ones_like(ids))
        if mlm.nsp:
            features["nsp_labels"] = rng.integers(0, 2, batch).astype(np.int32)
    elif config.model.arch == "encoder_decoder":
        raw, targets = compute_input_and_target_lengths(length, spans.noise_density, spans.mean_noise_span_length)
        features = span_corrupt(tokens(raw), rng, noise_density=spans.noise_density,
                                mean_noise_span_length=spans.mean_noise_span_length,
                                sentinel_start_id=vocab - 1, eos_id=1, inputs_length=length,
                                targets_length=config.data.target_length or targets)
    else:
        features = shift_for_causal_lm(tokens(length + 1))
    spec = aot.batch_spec(config)
    shapes = {k: (v.shape, v.dtype) for k, v in features.items()}
    assert shapes == {k: (s.shape, s.dtype) for k, s in spec.items()}, (shapes, spec)
    return features
