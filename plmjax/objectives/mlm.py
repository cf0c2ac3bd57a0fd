"""Masked language modelling: choose ~15% of tokens to predict and corrupt them (BERT: 80% [MASK], 10% random,
10% kept; ELECTRA: 85% [MASK], 15% kept)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MASK_FRACTION = 0.8  # of the chosen positions, replaced by [MASK]
RANDOM_FRACTION = 0.1  # replaced by a random non-special token; the rest stay unchanged


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_rate: float = 0.15,
    max_predictions: int = 20,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    mask_fraction: float = MASK_FRACTION,
    random_fraction: float = RANDOM_FRACTION,
) -> dict[str, np.ndarray]:
    """Choose and corrupt positions to predict in each row of int32[B, L].

    A row with n non-special tokens gets round(mask_rate * n) predictions, at least 1 and at
    most `max_predictions` (P). Returns the corrupted `input_ids` [B, L] and, per row, the
    ascending `masked_positions`, original `masked_ids` and `masked_weights` [B, P]; unused
    slots have position 0, id 0 and weight 0.
    """
    input_ids = np.asarray(input_ids, dtype=np.int32)
    special = np.unique(np.fromiter(special_ids, dtype=np.int32))
    batch, length = input_ids.shape

    candidate = ~np.isin(input_ids, special)
    num_candidates = candidate.sum(axis=1)
    num_masked = np.minimum(
        np.clip(np.round(mask_rate * num_candidates), 1, max_predictions), num_candidates
    ).astype(np.int64)
    valid = np.arange(max_predictions) < num_masked[:, None]

    # A random order of each row's candidates; the first num_masked are chosen, then sorted.
    scores = np.where(candidate, rng.random((batch, length)), np.inf)
    chosen = np.full((batch, max_predictions), length, dtype=np.int64)
    order = np.argsort(scores, axis=1, kind="stable")[:, :max_predictions]
    chosen[:, : order.shape[1]] = order
    positions = np.sort(np.where(valid, chosen, length), axis=1)
    positions = np.where(valid, positions, 0).astype(np.int32)
    return corrupt(input_ids, positions, valid, rng, mask_id=mask_id, vocab_size=vocab_size, special=special,
                   mask_fraction=mask_fraction, random_fraction=random_fraction)


def corrupt(input_ids: np.ndarray, positions: np.ndarray, valid: np.ndarray, rng: np.random.Generator, *,
            mask_id: int, vocab_size: int, special: np.ndarray, mask_fraction: float = MASK_FRACTION,
            random_fraction: float = RANDOM_FRACTION) -> dict[str, np.ndarray]:
    """The features of predicting `positions` [B, P] (where `valid`): each such token becomes [MASK] with
    probability `mask_fraction`, a random non-special token with `random_fraction`, else stays."""
    batch, predictions = positions.shape
    masked_ids = np.where(valid, np.take_along_axis(input_ids, positions, axis=1), 0)
    replaceable = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), special)
    random_ids = replaceable[rng.integers(len(replaceable), size=(batch, predictions))]
    action = rng.random((batch, predictions))
    new_ids = np.where(
        action < mask_fraction,
        mask_id,
        np.where(action < mask_fraction + random_fraction, random_ids, masked_ids),
    )
    corrupted = input_ids.copy()
    rows, slots = np.nonzero(valid)
    corrupted[rows, positions[rows, slots]] = new_ids[rows, slots]
    return {
        "input_ids": corrupted,
        "masked_positions": positions.astype(np.int32),
        "masked_ids": masked_ids.astype(np.int32),
        "masked_weights": valid.astype(np.float32),
    }
