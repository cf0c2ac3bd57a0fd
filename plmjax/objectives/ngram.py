"""N-gram masking (ALBERT, SpanBERT-style): predict whole words in spans of 1..n words, a span of k words drawn
with probability proportional to 1/k, then corrupt their tokens as BERT does.

Follows ALBERT's create_pretraining_data.py: candidate spans start at the words in a random order; a span that would
overshoot the row's prediction budget is shortened one word at a time, and one that overlaps words already chosen
is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from plmjax.objectives.mlm import MASK_FRACTION, RANDOM_FRACTION, corrupt


def span_probabilities(max_ngram: int) -> np.ndarray:
    """P(a span of k words), k = 1..max_ngram: proportional to 1/k (6/11, 3/11, 2/11 for 3)."""
    weights = 1.0 / np.arange(1, max_ngram + 1)
    return weights / weights.sum()


def words(candidate: np.ndarray, word_start: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) token ranges of the words in one row: runs of candidate tokens, each starting where
    `word_start` is set or after a non-candidate token."""
    out = []
    for i in np.flatnonzero(candidate):
        if out and out[-1][1] == i and not word_start[i]:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def choose_spans(row_words: list[tuple[int, int]], budget: int, max_ngram: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping spans (first word, number of words) whose tokens total at most `budget`."""
    probabilities = span_probabilities(max_ngram)
    covered = np.zeros(len(row_words), bool)
    spans, used = [], 0

    def tokens(first, count):
        return row_words[first + count - 1][1] - row_words[first][0]

    for first in rng.permutation(len(row_words)):
        if used >= budget:
            break
        longest = min(max_ngram, len(row_words) - first)
        p = probabilities[:longest] / probabilities[:longest].sum()
        count = int(rng.choice(longest, p=p)) + 1
        while count > 1 and used + tokens(first, count) > budget:
            count -= 1
        if used + tokens(first, count) > budget or covered[first:first + count].any():
            continue
        covered[first:first + count] = True
        spans.append((int(first), count))
        used += tokens(first, count)
    return spans


def mask_ngrams(
    input_ids: np.ndarray,
    word_start: np.ndarray,
    rng: np.random.Generator,
    *,
    max_ngram: int = 3,
    mask_rate: float = 0.15,
    max_predictions: int = 20,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    mask_fraction: float = MASK_FRACTION,
    random_fraction: float = RANDOM_FRACTION,
) -> dict[str, np.ndarray]:
    """`mlm.mask_tokens`' features, with the positions chosen as whole-word n-grams; `word_start` [B, L] marks the
    tokens that begin a word. A row predicts at most min(max_predictions, max(1, round(mask_rate * n))) of its
    n non-special tokens."""
    input_ids = np.asarray(input_ids, dtype=np.int32)
    special = np.unique(np.fromiter(special_ids, dtype=np.int32))
    batch = input_ids.shape[0]
    candidate = ~np.isin(input_ids, special)
    positions = np.zeros((batch, max_predictions), np.int32)
    valid = np.zeros((batch, max_predictions), bool)
    for b in range(batch):
        budget = min(max_predictions, max(1, round(mask_rate * candidate[b].sum())))
        row_words = words(candidate[b], word_start[b])
        chosen = sorted(i for first, count in choose_spans(row_words, budget, max_ngram, rng)
                        for w in range(first, first + count) for i in range(*row_words[w]))
        positions[b, :len(chosen)] = chosen
        valid[b, :len(chosen)] = True
    return corrupt(input_ids, positions, valid, rng, mask_id=mask_id, vocab_size=vocab_size, special=special,
                   mask_fraction=mask_fraction, random_fraction=random_fraction)
