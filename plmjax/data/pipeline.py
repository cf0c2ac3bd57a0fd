"""Deterministic, step-keyed pretraining batches: `make_source(config, tok, split).batch(step)`.

Examples are built once from the corpus split; step s reads examples s*B .. s*B+B-1 of the
epoch-concatenated order (epoch e shuffled by its own seed), then applies the objective with a
generator seeded by (seed, step, split). A resumed run therefore sees exactly the batches an
uninterrupted one would, while masks stay fresh at every step (dynamic masking).

Random streams, all `np.random.default_rng` seeds (SeedSequence ignores trailing zeros, so
each stream ends in a distinct non-zero tag or is the one three-word stream):
  objective at a step   [seed, step, split_code]
  epoch order           [seed, epoch, split_code, 1]
  example building      [seed, 0, split_code, 2]    (NSP partners)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence

import numpy as np
from etils import epath

from plmjax.config import Config
from plmjax.data.corpus import load_documents, split_sentences
from plmjax.data.tokenizer import Tokenizer
from plmjax.objectives import registry
from plmjax.objectives.causal_lm import shift_for_causal_lm
from plmjax.objectives.mlm import MASK_FRACTION, RANDOM_FRACTION, mask_tokens
from plmjax.objectives.ngram import mask_ngrams
from plmjax.objectives.span_corruption import (
    compute_input_and_target_lengths,
    noise_counts,
    span_corrupt,
)

SPLIT_CODES = {"train": 0, "eval": 1}
MAX_T5_SENTINELS = 100

Features = dict[str, np.ndarray]
Finish = Callable[[Features, np.random.Generator], Features]


# A directory's own vocabulary, in order of preference: a run's (or a converted release's) tokenizer.json,
# or the SentencePiece model a converted T5 release ships.
VOCAB_FILES = ("tokenizer.json", "spiece.model")


def vocabulary_path(config: Config, directory: str | None) -> str | None:
    """config.data.vocab if set, else the first of DIRECTORY/VOCAB_FILES present, else None."""
    if config.data.vocab:
        return config.data.vocab
    paths = [os.path.join(directory, name) for name in VOCAB_FILES] if directory else []
    return next((p for p in paths if epath.Path(p).exists()), None)  # a local path or a gs:// URL


def read_vocabulary(path: str):
    """A tokenizer.json as a Tokenizer; else (a SentencePiece .model, or a directory) the seqio vocabulary
    of plmjax.data.vocabularies, which serves the pipeline too (encode_batch, eos, pad, sentinel ids)."""
    if path.endswith(".json"):
        return Tokenizer.load(path)
    from plmjax.data.vocabularies import load_vocabulary

    return load_vocabulary(path)


def build_tokenizer(config: Config, workdir: str | None = None) -> Tokenizer:
    """`vocabulary_path(config, workdir)` if there is one, else train on the corpus.

    A trained tokenizer is saved to WORKDIR/tokenizer.json so later runs and resumes reuse it.
    """
    path = vocabulary_path(config, workdir)
    if path:
        return read_vocabulary(path)
    saved = os.path.join(workdir, "tokenizer.json") if workdir else None
    vocab_size = config.model.vocab_size
    kind = config.data.vocab_kind or ("bpe" if config.model.arch == "decoder" else "wordpiece")
    tokenizer = Tokenizer.train(
        load_documents(config.data.corpus),
        kind=kind,
        vocab_size=vocab_size,
        encoder=config.model.arch == "encoder",
        num_sentinels=min(MAX_T5_SENTINELS, vocab_size // 10)
        if config.model.arch == "encoder_decoder"
        else 0,
    )
    if saved:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
    return tokenizer


class BatchSource:
    """Fixed examples plus an objective; `batch(step)` is a pure function of (seed, split, step)."""

    def __init__(
        self, examples: Features, objective: Finish, batch_size: int, seed: int, split: str
    ):
        self.examples = examples  # arrays with a leading example axis, before the objective
        self.objective = objective
        self.batch_size = batch_size
        self.seed = seed
        self.split_code = SPLIT_CODES[split]

    @property
    def num_examples(self) -> int:
        return len(next(iter(self.examples.values())))

    def batch(self, step: int) -> Features:
        """Model-ready features of training step `step` (objective applied)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        indices = self._indices(step)
        rows = {key: values[indices] for key, values in self.examples.items()}
        return self.objective(rows, np.random.default_rng([self.seed, step, self.split_code]))

    def _indices(self, step: int) -> np.ndarray:
        """Example indices at offsets step*B .. step*B+B-1 of the epoch-concatenated order."""
        offsets = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs, positions = np.divmod(offsets, self.num_examples)
        indices = np.empty_like(offsets)
        for epoch in np.unique(epochs):
            order = np.random.default_rng([self.seed, epoch, self.split_code, 1]).permutation(
                self.num_examples
            )
            indices[epochs == epoch] = order[positions[epochs == epoch]]
        return indices


def split_documents(documents: Sequence[str], eval_fraction: float, split: str) -> list[str]:
    """The last `eval_fraction` of the documents (at least one) are eval; the rest are train."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_CODES)}")
    num_eval = max(1, round(len(documents) * eval_fraction))
    if num_eval >= len(documents):
        raise ValueError(
            f"the corpus has {len(documents)} document(s): too few to hold out {num_eval} for eval"
        )
    return list(documents[-num_eval:] if split == "eval" else documents[:-num_eval])


def make_source(config: Config, tokenizer: Tokenizer, split: str) -> BatchSource:
    """Batches of `split` for config.objective.kind (its registered corpus pipeline)."""
    objective = registry.for_config(config)
    if tokenizer.vocab_size > config.model.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids but "
            f"model.vocab_size={config.model.vocab_size}"
        )
    if objective.arch == "encoder" and tokenizer.pad_id != config.model.pad_token_id:
        raise ValueError(f"the tokenizer pads with id {tokenizer.pad_id} but model.pad_token_id="
                         f"{config.model.pad_token_id}; set model.pad_token_id={tokenizer.pad_id}")
    documents = split_documents(
        load_documents(config.data.corpus), config.data.eval_fraction, split
    )
    rng = np.random.default_rng([config.data.seed, 0, SPLIT_CODES[split], 2])
    examples, finish = objective.examples(config, tokenizer, documents, rng)
    source = BatchSource(examples, finish, config.data.batch_size, config.data.seed, split)
    if not source.num_examples:
        raise ValueError(
            f"the {split} split of corpus {config.data.corpus!r} ({len(documents)} documents) "
            f"yields no examples of length {config.data.seq_length}"
        )
    return source


# ---------------------------------------------------------------------- shared helpers


def _pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> np.ndarray:
    """int32[len(rows), length] with each row left-aligned and padded."""
    out = np.full((len(rows), length), pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _token_windows(tokenizer: Tokenizer, documents: Sequence[str], window: int) -> np.ndarray:
    """int32[N, window]: all documents' tokens, each followed by EOS, cut into whole windows."""
    stream = np.fromiter(
        itertools.chain.from_iterable(
            [*ids, tokenizer.eos_id] for ids in tokenizer.encode_batch(documents)
        ),
        dtype=np.int32,
    )
    count = len(stream) // window
    return stream[: count * window].reshape(count, window)


# ---------------------------------------------------------------------- encoder + mlm (+ nsp)


def _document_segments(
    tokenizer: Tokenizer, documents: Sequence[str], target: int
) -> list[list[list[int]]]:
    """Per document, consecutive sentences joined until each segment holds >= `target` tokens."""
    sentences = [split_sentences(document) for document in documents]
    encoded = iter(tokenizer.encode_batch([s for doc in sentences for s in doc]))
    segmented = []
    for doc in sentences:
        segments, current = [], []
        for ids in itertools.islice(encoded, len(doc)):
            current += ids
            if len(current) >= target:
                segments.append(current)
                current = []
        segmented.append([*segments, current] if current else segments)
    return segmented


def _random_segment(
    segments: list[list[list[int]]], doc: int, next_index: int, rng: np.random.Generator
) -> list[int]:
    """A segment that is not the actual next one: from another document when the split has one."""
    others = [d for d, doc_segments in enumerate(segments) if d != doc and doc_segments]
    if others:
        chosen = segments[others[rng.integers(len(others))]]
        return chosen[rng.integers(len(chosen))]
    candidates = [j for j in range(len(segments[doc])) if j != next_index]
    return segments[doc][candidates[rng.integers(len(candidates))]]


def _nsp_pairs(
    segments: list[list[list[int]]], rng: np.random.Generator
) -> list[tuple[list[int], list[int], int]]:
    """(A, B, label) pairs: B is A's successor (label 0) or, half the time, a random segment (1).

    As in BERT, a successor passed over for a random B starts the next pair instead.
    """
    pairs = []
    for doc, doc_segments in enumerate(segments):
        i = 0
        while i + 1 < len(doc_segments):
            if rng.random() < 0.5:
                pairs.append((doc_segments[i], doc_segments[i + 1], 0))
                i += 2
            else:
                pairs.append((doc_segments[i], _random_segment(segments, doc, i + 1, rng), 1))
                i += 1
    return pairs


def _fit_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """A and B with the end of the longer one cut so that both fit in `budget` tokens."""
    a = a[: max(budget - len(b), (budget + 1) // 2)]
    return a, b[: budget - len(a)]


def _pair_row(
    a: list[int], b: list[int], length: int, tokenizer: Tokenizer
) -> tuple[list[int], list[int]]:
    """[CLS] A [SEP] B [SEP] and its segment ids, the longer of A/B trimmed to fit `length`."""
    a, b = _fit_pair(a, b, length - 3)
    tokens = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
    return tokens, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def masking_objective(tokenizer: Tokenizer, options, mask_fraction: float = MASK_FRACTION,
                      random_fraction: float = RANDOM_FRACTION) -> Finish:
    """Dynamic masking of the rows' `input_ids` by an objective's `options` (mask_rate, max_predictions, and
    ngram: 0 independent tokens, n whole-word spans of 1..n words), other features passed through."""
    if None in (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id):
        raise ValueError(
            f"masked LM needs [CLS], [SEP] and [MASK] (or <s>, </s>, <mask>): {tokenizer.kind} {tokenizer} has not"
        )
    common = dict(mask_rate=options.mask_rate, max_predictions=options.max_predictions, mask_id=tokenizer.mask_id,
                  vocab_size=tokenizer.vocab_size, special_ids=tokenizer.special_ids, mask_fraction=mask_fraction,
                  random_fraction=random_fraction)
    ngram = getattr(options, "ngram", 0)
    continuation = getattr(tokenizer, "continuation_ids", None) if ngram else None
    if ngram and continuation is None:
        raise ValueError(f"n-gram masking reads word starts from a plmjax tokenizer.json; {tokenizer} has none: "
                         "set the objective's ngram=0")

    def objective(rows: Features, step_rng: np.random.Generator) -> Features:
        ids = rows["input_ids"]
        if ngram:
            masked = mask_ngrams(ids, ~np.isin(ids, continuation), step_rng, max_ngram=ngram, **common)
        else:
            masked = mask_tokens(ids, step_rng, **common)
        return {**rows, **masked}

    return objective


def mlm_objective(config: Config, tokenizer: Tokenizer) -> Finish:
    """BERT's dynamic masking (objective.mlm.*)."""
    return masking_objective(tokenizer, config.objective.mlm)


def _full_sentences(tokenizer: Tokenizer, documents: Sequence[str], budget: int) -> list[list[int]]:
    """RoBERTa's FULL-SENTENCES: whole sentences packed in order into rows of at most `budget` tokens, crossing
    document boundaries with a separator between documents; a sentence longer than a row is cut."""
    rows, current = [], []
    for doc in _document_segments(tokenizer, documents, target=1):
        separate = bool(current)  # the first sentence of a document, unless it starts a row
        for sentence in doc:
            sentence = sentence[:budget]
            if len(current) + separate + len(sentence) > budget:
                rows.append(current)
                current, separate = [], False
            current += [tokenizer.sep_id] * separate + sentence
            separate = False
    return [*rows, current] if current else rows


def _encoder_examples(rows: Sequence[tuple[list[int], list[int]]], length: int, tokenizer: Tokenizer,
                      **labels: np.ndarray) -> Features:
    """(tokens, segment ids) rows padded to `length`, with their attention mask and any per-row labels."""
    input_ids = _pad_rows([tokens for tokens, _ in rows], length, tokenizer.pad_id)
    return {
        "input_ids": input_ids,
        "segment_ids": _pad_rows([segment_ids for _, segment_ids in rows], length, 0),
        "attention_mask": (input_ids != tokenizer.pad_id).astype(np.int32),
        **labels,
    }


def single_rows(config: Config, tokenizer: Tokenizer, documents: Sequence[str],
                full_sentences: bool = False) -> Features:
    """[CLS] text [SEP] rows: one document's sentences up to seq_length, or FULL-SENTENCES across documents."""
    length = config.data.seq_length
    if full_sentences:
        texts = _full_sentences(tokenizer, documents, length - 2)
    else:
        texts = [s[: length - 2] for doc in _document_segments(tokenizer, documents, target=length - 2) for s in doc]
    return _encoder_examples([([tokenizer.cls_id, *t, tokenizer.sep_id], []) for t in texts], length, tokenizer)


def mlm_examples(
    config: Config, tokenizer: Tokenizer, documents: Sequence[str], rng: np.random.Generator
) -> tuple[Features, Finish]:
    """BERT inputs: NSP sentence pairs, or single rows when nsp is off (FULL-SENTENCES with full_sentences)."""
    objective = mlm_objective(config, tokenizer)
    options, length = config.objective.mlm, config.data.seq_length
    if not options.nsp:
        return single_rows(config, tokenizer, documents, options.full_sentences), objective
    pairs = _nsp_pairs(_document_segments(tokenizer, documents, target=(length - 3) // 2), rng)
    rows = [_pair_row(a, b, length, tokenizer) for a, b, _ in pairs]
    labels = np.array([label for _, _, label in pairs], dtype=np.int32)
    return _encoder_examples(rows, length, tokenizer, nsp_labels=labels), objective


def _split_chunks(tokenizer: Tokenizer, documents: Sequence[str], budget: int,
                  rng: np.random.Generator) -> list[tuple[list[int], list[int]]]:
    """ALBERT's segment pairs: each document's sentences gathered into chunks of at least `budget` tokens (or the
    document's rest), each chunk of two or more sentences cut at a random sentence boundary into A and B — so A and
    B are consecutive text and neither is the longer by construction (a length that told the order apart)."""
    pairs = []
    for doc in _document_segments(tokenizer, documents, target=1):
        chunk = []
        for i, sentence in enumerate(doc):
            chunk.append(sentence)
            if sum(map(len, chunk)) >= budget or i == len(doc) - 1:
                if len(chunk) > 1:
                    cut = int(rng.integers(1, len(chunk)))
                    pairs.append(([t for s in chunk[:cut] for t in s], [t for s in chunk[cut:] for t in s]))
                chunk = []
    return pairs


def sentence_order_examples(
    config: Config, tokenizer: Tokenizer, documents: Sequence[str], rng: np.random.Generator
) -> tuple[Features, Finish]:
    """ALBERT's inputs: two consecutive segments of one document (`_split_chunks`), put in [CLS] A [SEP] B [SEP] rows
    at each step with exactly half of a batch's pairs swapped (`sop_labels` 1; 0 is the original order), then
    masked."""
    length = config.data.seq_length
    pairs = [_fit_pair(a, b, length - 3) for a, b in _split_chunks(tokenizer, documents, length - 3, rng)]
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    examples = {"first": _pad_rows(firsts, length, tokenizer.pad_id),
                "first_length": np.array([len(a) for a in firsts], np.int32),
                "second": _pad_rows(seconds, length, tokenizer.pad_id),
                "second_length": np.array([len(b) for b in seconds], np.int32)}
    masking = masking_objective(tokenizer, config.objective.sop)

    def objective(rows: Features, step_rng: np.random.Generator) -> Features:
        batch = len(rows["first"])
        order = step_rng.permutation(batch)
        swapped = np.zeros(batch, bool)
        swapped[order[: batch // 2]] = True
        if batch % 2:
            swapped[order[-1]] = step_rng.random() < 0.5
        built = []
        for i in range(batch):
            a = rows["first"][i, : rows["first_length"][i]].tolist()
            b = rows["second"][i, : rows["second_length"][i]].tolist()
            built.append(_pair_row(*((b, a) if swapped[i] else (a, b)), length, tokenizer))
        return masking(_encoder_examples(built, length, tokenizer, sop_labels=swapped.astype(np.int32)), step_rng)

    return examples, objective


# ------------------------------------------------------------ encoder_decoder + span corruption


def span_corruption_objective(config: Config, tokenizer: Tokenizer) -> tuple[int, Finish]:
    """(raw window length, T5 span corruption of the rows' `tokens`) for config's lengths."""
    density = config.objective.span_corruption.noise_density
    span_length = config.objective.span_corruption.mean_noise_span_length
    raw_length, needed_targets = compute_input_and_target_lengths(
        config.data.seq_length, density, span_length
    )
    targets_length = config.data.target_length or needed_targets
    if targets_length < needed_targets:
        raise ValueError(
            f"data.target_length={targets_length} is too short: span corruption of "
            f"{raw_length} raw tokens makes {needed_targets} targets"
        )
    num_spans = noise_counts(raw_length, density, span_length)[1]
    if tokenizer.num_sentinels < num_spans:
        raise ValueError(
            f"span corruption needs {num_spans} sentinels per sequence; "
            f"the tokenizer has {tokenizer.num_sentinels}"
        )

    def objective(rows: Features, step_rng: np.random.Generator) -> Features:
        return span_corrupt(
            rows["tokens"],
            step_rng,
            noise_density=density,
            mean_noise_span_length=span_length,
            sentinel_start_id=tokenizer.sentinel_id(0),
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id,
            inputs_length=config.data.seq_length,
            targets_length=targets_length,
            decoder_start_id=config.model.decoder_start_token_id,
        )

    return raw_length, objective


def span_examples(
    config: Config, tokenizer: Tokenizer, documents: Sequence[str], rng: np.random.Generator
) -> tuple[Features, Finish]:
    """T5 inputs: raw windows sized so the corrupted encoder input fills seq_length exactly."""
    raw_length, objective = span_corruption_objective(config, tokenizer)
    return {"tokens": _token_windows(tokenizer, documents, raw_length)}, objective


# ---------------------------------------------------------------------- decoder + causal lm


def causal_lm_objective(tokenizer: Tokenizer) -> Finish:
    """Rows' `tokens` windows (seq_length+1) shifted into inputs and next-token targets."""

    def objective(rows: Features, step_rng: np.random.Generator) -> Features:
        return shift_for_causal_lm(rows["tokens"], pad_id=tokenizer.pad_id)

    return objective


def causal_examples(
    config: Config, tokenizer: Tokenizer, documents: Sequence[str], rng: np.random.Generator
) -> tuple[Features, Finish]:
    """GPT inputs: windows of seq_length+1 tokens, shifted into inputs and next-token targets."""
    windows = _token_windows(tokenizer, documents, config.data.seq_length + 1)
    return {"tokens": windows}, causal_lm_objective(tokenizer)
