"""SQuAD v1.1 and v2.0: T5's "question: ... context: ..." prompt, and BERT's doc-stride span features.

Encoder rows are `[CLS] question [SEP] window [SEP]`, where windows of the context's tokens start
`doc_stride` tokens apart. Training labels are the first answer's token span, or [CLS] (position 0)
when the window does not hold it or the question has none. A prediction is the best-scoring span
(start + end logit, end >= start, at most `max_answer_tokens`, starting in the window where that
token has the most context) cut from the original context by the tokenizer's character offsets;
v2 predicts no answer ("") when the [CLS] score beats it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from plmjax.data import metrics
from plmjax.data.downstream import Benchmark, Record, Rows, TextToText, add, on_values
from plmjax.data.encoding import id_pair_rows


def answers(record: Record) -> list[str]:
    """The gold answer texts; none for an unanswerable (v2) question."""
    return [] if record.get("is_impossible") else record["answers"]["text"]


def _check(record: Record) -> None:
    texts, starts = record["answers"]["text"], record["answers"]["answer_start"]
    if len(texts) != len(starts):
        raise ValueError(f"{len(texts)} answer texts but {len(starts)} answer starts")
    for text, start in zip(texts, starts):
        if record["context"][start:start + len(text)] != text:
            raise ValueError(f"answer {text!r} is not at character {start} of its context")
    if not record.get("is_impossible") and not texts:
        raise ValueError("an answerable question without answers")


@dataclasses.dataclass(frozen=True)
class _Window:
    """Where one row's context tokens come from, and how its logits map back to context text."""

    record: int
    row_offset: int  # row position of the window's first context token (after [CLS] question [SEP])
    char_spans: np.ndarray  # int [tokens, 2]: each context token's characters in the record's context
    max_context: np.ndarray  # bool [tokens]: this window gives the token its most context


def _windows(num_tokens: int, capacity: int, stride: int) -> list[tuple[int, int]]:
    """(first, length) of each window: BERT's doc stride over the context tokens."""
    windows, first = [], 0
    while True:
        length = min(num_tokens - first, capacity)
        windows.append((first, length))
        if first + length >= num_tokens:
            return windows
        first += min(length, stride)


def _max_context(windows: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per window, whether each of its tokens has its most context there (BERT's _check_is_max_context)."""
    best: dict[int, tuple[float, int]] = {}
    for w, (first, length) in enumerate(windows):
        for token in range(first, first + length):
            score = min(token - first, first + length - 1 - token) + 0.01 * length
            if token not in best or score > best[token][0]:
                best[token] = (score, w)
    return [np.array([best[t][1] == w for t in range(first, first + length)], bool)
            for w, (first, length) in enumerate(windows)]


def _token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """First and last context token overlapping the characters [start, end)."""
    covering = [i for i, (begin, stop) in enumerate(offsets) if begin < end and stop > start]
    if not covering:
        raise ValueError(f"no token of the context covers the answer's characters {start}..{end}")
    return covering[0], covering[-1]


@dataclasses.dataclass(frozen=True)
class SpanExtraction:
    """BERT's SQuAD features; `predictions` maps span logits back to exact context text."""

    version_2: bool
    doc_stride: int = 128
    max_query_tokens: int = 64
    max_answer_tokens: int = 30
    n_best: int = 20
    head: str = "span"
    num_labels: int = 2

    def encode(self, records, tokenizer, seq_length) -> Rows:
        contexts = tokenizer.hf.encode_batch([r["context"] for r in records], add_special_tokens=False)
        questions = tokenizer.encode_batch([r["question"] for r in records])
        pairs, starts, ends, windows = [], [], [], []
        for index, (record, context, question) in enumerate(zip(records, contexts, questions)):
            question = question[: self.max_query_tokens]
            capacity = seq_length - len(question) - 3
            if capacity < 1:
                raise ValueError(f"data.seq_length={seq_length} leaves no room for context after a "
                                 f"{len(question)}-token question")
            span = None
            if answers(record) and context.ids:
                start = record["answers"]["answer_start"][0]
                span = _token_span(context.offsets, start, start + len(record["answers"]["text"][0]))
            spans = _windows(len(context.ids), capacity, self.doc_stride)
            for (first, length), max_context in zip(spans, _max_context(spans)):
                pairs.append((question, context.ids[first:first + length]))
                window = _Window(index, len(question) + 2,
                                 np.array(context.offsets[first:first + length], np.int64).reshape(-1, 2), max_context)
                inside = span is not None and first <= span[0] and span[1] < first + length
                starts.append(span[0] - first + window.row_offset if inside else 0)
                ends.append(span[1] - first + window.row_offset if inside else 0)
                windows.append(window)
        arrays = id_pair_rows(tokenizer, pairs, seq_length)
        arrays["start_positions"] = np.array(starts, np.int32)
        arrays["end_positions"] = np.array(ends, np.int32)
        return Rows(arrays, np.array([w.record for w in windows]), windows)

    def _best_span(self, start_logits, end_logits, window: _Window) -> tuple[float, int, int] | None:
        """(score, first, last context token) of the window's best valid span, or None."""
        count = len(window.char_spans)

        def candidates(logits) -> list[int]:
            """The window's context tokens among the n_best highest logits."""
            tokens = np.argsort(-logits)[: self.n_best] - window.row_offset
            return [int(t) for t in tokens if 0 <= t < count]

        best = None
        for first in candidates(start_logits):
            if not window.max_context[first]:
                continue
            for last in candidates(end_logits):
                if first <= last < first + self.max_answer_tokens:
                    score = float(start_logits[first + window.row_offset] + end_logits[last + window.row_offset])
                    if best is None or score > best[0]:
                        best = (score, first, last)
        return best

    def predictions(self, outputs, rows, records) -> list[str]:
        starts, ends = np.asarray(outputs["start_logits"]), np.asarray(outputs["end_logits"])
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for row, window in enumerate(rows.extras):
            index = window.record
            null[index] = min(null.get(index, np.inf), float(starts[row, 0] + ends[row, 0]))
            span = self._best_span(starts[row], ends[row], window)
            if span and (index not in best or span[0] > best[index][0]):
                score, first, last = span
                begin, end = window.char_spans[first][0], window.char_spans[last][1]
                best[index] = (score, records[index]["context"][begin:end])
        predicted = []
        for index in range(len(records)):
            score, text = best.get(index, (-np.inf, ""))
            predicted.append("" if self.version_2 and null[index] > score else text)
        return predicted


def _squad(version: str, tfds_config: str, version_2: bool) -> Benchmark:
    return Benchmark(
        name=f"squad_{version}", eval_data=(f"squad/{tfds_config}", "validation"),
        train_data=(f"squad/{tfds_config}", "train"), gold=answers,
        metric=on_values(metrics.squad_v2 if version_2 else metrics.squad_v1),
        text_to_text=TextToText(
            prompt=lambda r: f"question: {r['question']} context: {r['context']}",
            targets=lambda r: answers(r)[:1] or [""],
            parse=lambda text, record, canonical: text,
            gold=lambda r, canonical: [canonical(a) for a in answers(r)]),
        features=SpanExtraction(version_2),
        check=_check,
    )


add(_squad("v1", "v1.1", version_2=False))
add(_squad("v2", "v2.0", version_2=True))
