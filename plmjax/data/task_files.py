"""Benchmarks made of the user's own files: a small task file names the files, their columns and the kind.

    {"kind": "classification", "train": "train.jsonl", "validation": "dev.jsonl", "text": "text", "label": "label"}

Kinds and their columns: classification and regression ("text", optional "text_pair", "label"),
multiple_choice ("text": the context, "choices": a list, "label": the right choice as written or its index),
token_classification ("tokens": the words, "tags": one BIO tag per word), extractive_qa (SQuAD-format JSON
files, no columns), text_to_text ("input", "target"). Data files are JSON lines (.jsonl, .json), CSV or TSV
(by extension; a list in a CSV/TSV cell is JSON or whitespace-separated words); paths are relative to the task
file or absolute. Optional keys: "test" (a third split), "truncation" ("head", or "head_tail": a long single
text keeps its first quarter and its end). Labels (and tags) are the values the train file holds, kept as
written and saved with the run (WORKDIR/task.json) so evaluation and predictions map back to them.

Every problem with the files is an error before any training step: a missing column, an empty file, a row
that does not parse (file and line), a validation label the train file never has, tags and words of
different counts. Rows longer than data.seq_length are truncated with one warning counting them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np

from plmjax.config import ConfigError
from plmjax.data.downstream import Record, Rows
from plmjax.data.encoding import MultipleChoice, PairClassification, _padded, fields, id_pair_rows

SAVED = "task.json"  # the task file a run keeps in its workdir, with absolute paths and its labels
SPLITS = ("train", "validation", "test")
COLUMNS = {  # kind -> (required columns, optional columns)
    "classification": (("text", "label"), ("text_pair",)),
    "regression": (("text", "label"), ("text_pair",)),
    "multiple_choice": (("text", "choices", "label"), ()),
    "token_classification": (("tokens", "tags"), ()),
    "extractive_qa": ((), ()),
    "text_to_text": (("input", "target"), ()),
}
HEADS = {"classification": "classification", "regression": "regression", "multiple_choice": "multiple_choice",
         "token_classification": "token_classification", "extractive_qa": "span"}
TRUNCATIONS = ("head", "head_tail")


class TaskFileError(ConfigError):
    """A task file or one of its data files that cannot be used; the message names the file (and line)."""


# ---------------------------------------------------------------- reading rows


def read_rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) of a JSON-lines, CSV or TSV file; an error naming the file and line of a bad row."""
    if not os.path.isfile(path):
        raise TaskFileError(f"data file {path!r} does not exist")
    extension = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8", newline="") as f:
        if extension in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="," if extension == ".csv" else "\t")
            rows = [(reader.line_num, row) for row in reader]
            if any(None in row or None in row.values() for _, row in rows):
                line = next(n for n, row in rows if None in row or None in row.values())
                raise TaskFileError(f"{path}:{line}: the row has a different number of fields than the header")
        elif extension in (".jsonl", ".json"):
            rows = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TaskFileError(f"{path}:{number}: not a JSON object: {error.msg}") from None
                if not isinstance(row, dict):
                    raise TaskFileError(f"{path}:{number}: a row must be a JSON object, not {type(row).__name__}")
                rows.append((number, row))
        else:
            raise TaskFileError(f"data file {path!r}: use .jsonl, .json, .csv or .tsv")
    if not rows:
        raise TaskFileError(f"data file {path!r} has no rows")
    return rows


def _squad_rows(path: str) -> list[tuple[int, dict]]:
    """One row per question of a SQuAD-format JSON file ({"data": [{"paragraphs": [{"context", "qas"}]}]})."""
    if not os.path.isfile(path):
        raise TaskFileError(f"data file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise TaskFileError(f"{path}: not a SQuAD-format JSON file with a 'data' list ({error})") from None
    rows = []
    for article in data:
        for paragraph in article.get("paragraphs", ()):
            for qa in paragraph.get("qas", ()):
                answers = qa.get("answers", [])
                try:
                    rows.append((len(rows) + 1, {
                        "id": str(qa.get("id", len(rows))), "context": paragraph["context"], "question": qa["question"],
                        "answers": {"text": [a["text"] for a in answers],
                                    "answer_start": [a["answer_start"] for a in answers]},
                        "is_impossible": bool(qa.get("is_impossible", not answers))}))
                except (KeyError, TypeError) as error:
                    raise TaskFileError(f"{path}: question {len(rows) + 1} ({qa.get('id', 'no id')}) lacks "
                                        f"{error}; SQuAD format has context, question and answers with text and "
                                        "answer_start") from None
    if not rows:
        raise TaskFileError(f"data file {path!r} has no questions")
    return rows


def _words(value, where: str) -> list:
    """A list column: a list, or a string holding a JSON list or whitespace-separated words."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError:
                raise TaskFileError(f"{where}: {value[:40]!r} is not a JSON list") from None
        return text.split()
    raise TaskFileError(f"{where}: expected a list, got {type(value).__name__}")


def _label_key(value) -> str:
    """Labels compare as text, so a CSV's "1" and a JSON 1 are the same class."""
    return str(value)


# ---------------------------------------------------------------- the task file


@dataclasses.dataclass(frozen=True)
class TaskFile:
    """A parsed task file: kind, data files by split, column names by role, labels as the train file writes them."""

    path: str
    kind: str
    files: dict[str, str]
    columns: dict[str, str]
    truncation: str = "head"
    labels: tuple = ()  # classification and multiple choice (written labels); tags for token classification

    @classmethod
    def read(cls, path: str) -> TaskFile:
        """Parse and check a task file; a saved one (WORKDIR/task.json) keeps its labels."""
        path = os.path.abspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except FileNotFoundError:
            raise TaskFileError(f"task file {path!r} does not exist") from None
        except json.JSONDecodeError as error:
            raise TaskFileError(f"task file {path!r} is not JSON: {error}") from None
        kind = spec.get("kind")
        if kind not in COLUMNS:
            raise TaskFileError(f"task file {path!r}: 'kind' must be one of {', '.join(COLUMNS)}, not {kind!r}")
        required, optional = COLUMNS[kind]
        known = {"kind", "labels", "truncation", *SPLITS, *required, *optional}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise TaskFileError(f"task file {path!r}: unknown key(s) {', '.join(unknown)}; a {kind} task file has "
                                f"{', '.join(sorted(known))}")
        missing = [key for key in ("train", "validation", *required) if key not in spec]
        if missing:
            raise TaskFileError(f"task file {path!r} lacks {', '.join(repr(k) for k in missing)}")
        truncation = spec.get("truncation", "head")
        if truncation not in TRUNCATIONS:
            raise TaskFileError(f"task file {path!r}: 'truncation' must be one of {', '.join(TRUNCATIONS)}")
        base = os.path.dirname(path)
        files = {split: os.path.join(base, spec[split]) for split in SPLITS if split in spec}
        columns = {role: spec[role] for role in (*required, *optional) if role in spec}
        task = cls(path, kind, files, columns, truncation, tuple(spec.get("labels", ())))
        if not task.labels and kind in ("classification", "multiple_choice", "token_classification"):
            task = dataclasses.replace(task, labels=task._labels_of_train())
        return task

    def save(self, directory: str) -> str:
        """Write DIRECTORY/task.json: this task with absolute paths and its labels."""
        spec = {"kind": self.kind, **self.files, **self.columns, "truncation": self.truncation,
                "labels": list(self.labels)}
        path = os.path.join(directory, SAVED)
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=2, ensure_ascii=False)
        return path

    @property
    def num_labels(self) -> int:
        """What the head predicts: classes, tags, one score (regression, a choice) or start/end (QA)."""
        return {"regression": 1, "multiple_choice": 1, "extractive_qa": 2}.get(self.kind, len(self.labels))

    def _labels_of_train(self) -> tuple:
        column = self.columns.get("tags" if self.kind == "token_classification" else "label")
        values: dict[str, Any] = {}
        for number, row in self._raw("train"):
            where = f"{self.files['train']}:{number}"
            value = row.get(column)
            if self.kind == "token_classification":
                for tag in _words(value, where):
                    values.setdefault(_label_key(tag), tag)
            elif self.kind == "classification":
                values.setdefault(_label_key(value), value)
        if self.kind == "multiple_choice":
            return ()
        return tuple(values[key] for key in sorted(values))

    def _raw(self, split: str) -> list[tuple[int, dict]]:
        if split not in self.files:
            raise TaskFileError(f"task file {self.path!r} has no {split!r} file")
        return self._rows(self.files[split], tuple(self.columns))

    def _rows(self, path: str, required) -> list[tuple[int, dict]]:
        rows = _squad_rows(path) if self.kind == "extractive_qa" else read_rows(path)
        header = set(rows[0][1])
        missing = [self.columns[role] for role in required if self.columns[role] not in header]
        if missing:
            raise TaskFileError(f"{path}: no column {', '.join(repr(m) for m in missing)}; "
                                f"its columns are {', '.join(sorted(header))}")
        return rows

    def records(self, split: str) -> list[Record]:
        """The split's rows as records of this kind, labels checked."""
        path = self.files.get(split, "")
        return [self.record(row, f"{path}:{number}") for number, row in self._raw(split)]

    def inputs(self, path: str) -> list[Record]:
        """The rows of any file in this task's format, labels optional (what `plmjax predict` reads)."""
        label = {"token_classification": "tags", "text_to_text": "target"}.get(self.kind, "label")
        required = [role for role in self.columns if role != label]
        return [self.record(row, f"{path}:{number}", labelled=False) for number, row in self._rows(path, required)]

    def record(self, row: dict, where: str, labelled: bool = True) -> Record:
        """One row as a record: texts, and the label as the head's target (class index, float, tag ids)."""
        column = self.columns
        def get(role, default=None):  # noqa: E306
            if role not in column:
                return default
            if column[role] not in row:
                raise TaskFileError(f"{where}: no column {column[role]!r}")
            return row[column[role]]

        kind, record = self.kind, {"row": row}
        if kind == "extractive_qa":
            return {**row, "row": row}
        if kind in ("classification", "regression", "multiple_choice"):
            record["text"] = _text(get("text"), where)
            record["text_pair"] = None if "text_pair" not in column else _text(get("text_pair"), where)
        if kind == "multiple_choice":
            record["choices"] = [_text(c, where) for c in _words(get("choices"), where)]
        if kind == "token_classification":
            record["tokens"] = [str(t) for t in _words(get("tokens"), where)]
        if kind == "text_to_text":
            record["input"] = _text(get("input"), where)
            record["target"] = _text(get("target"), where) if labelled or column["target"] in row else ""
            return record
        if not labelled and column.get("label", column.get("tags", column.get("target"))) not in row:
            return record
        if kind == "classification":
            index = {_label_key(v): i for i, v in enumerate(self.labels)}
            key = _label_key(get("label"))
            if key not in index:
                raise TaskFileError(f"{where}: label {get('label')!r} never occurs in the train file "
                                    f"({self.files['train']}); its labels are {list(self.labels)}")
            record["label"] = index[key]
        elif kind == "regression":
            try:
                record["label"] = float(get("label"))
            except (TypeError, ValueError):
                raise TaskFileError(f"{where}: regression label {get('label')!r} is not a number") from None
        elif kind == "multiple_choice":
            record["label"] = _choice_index(get("label"), record["choices"], where)
        elif kind == "token_classification":
            tags = _words(get("tags"), where)
            if len(tags) != len(record["tokens"]):
                raise TaskFileError(f"{where}: {len(record['tokens'])} tokens but {len(tags)} tags")
            index = {_label_key(v): i for i, v in enumerate(self.labels)}
            unknown = [t for t in tags if _label_key(t) not in index]
            if unknown:
                raise TaskFileError(f"{where}: tag {unknown[0]!r} never occurs in the train file; "
                                    f"its tags are {list(self.labels)}")
            record["tags"] = [index[_label_key(t)] for t in tags]
        return record

    def check(self) -> None:
        """Read every split once, so that any bad row is an error now."""
        for split in self.files:
            self.records(split)


def _text(value, where: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise TaskFileError(f"{where}: an empty text")
    return str(value)


def _choice_index(label, choices: list[str], where: str) -> int:
    """The right choice: its index (a number) or its text."""
    if isinstance(label, str) and label in choices:
        return choices.index(label)
    try:
        index = int(label)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(choices):
        raise TaskFileError(f"{where}: label {label!r} is neither one of the {len(choices)} choices nor its index")
    return index


# ---------------------------------------------------------------- encoder features


@dataclasses.dataclass(frozen=True)
class TokenTagging:
    """Per-word tags on sub-word tokens: a word's tag sits on its first token; other tokens weigh 0."""

    num_labels: int
    head: str = "token_classification"

    def encode(self, records, tokenizer, seq_length) -> Rows:
        rows, labels, weights, firsts = [], [], [], []
        for record in records:
            ids, tags, mask, first = [tokenizer.cls_id], [0], [0.0], []
            for w, word in enumerate(record["tokens"]):
                pieces = tokenizer.encode(word) or [tokenizer.unk_id]
                if len(ids) + len(pieces) > seq_length - 1:
                    break
                first.append(len(ids))
                ids += pieces
                tags += [record.get("tags", [0] * len(record["tokens"]))[w]] + [0] * (len(pieces) - 1)
                mask += [1.0] + [0.0] * (len(pieces) - 1)
            rows.append(ids + [tokenizer.sep_id])
            labels.append(tags + [0])
            weights.append(mask + [0.0])
            firsts.append(first)
        input_ids = _padded(rows, seq_length, tokenizer.pad_id)
        arrays = {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids),
                  "attention_mask": (input_ids != tokenizer.pad_id).astype(np.int32),
                  "labels": _padded(labels, seq_length, 0), "label_weights": _padded(weights, seq_length, 0).astype(
                      np.float32)}
        return Rows(arrays, np.arange(len(records)), firsts)

    def predictions(self, outputs, rows, records) -> list[list[int]]:
        """A tag id per word; words past the truncation get tag 0's neighbour 'O' if there is one (see tag_names)."""
        best = np.asarray(outputs).argmax(-1)
        return [[int(best[row, position]) for position in first] + [-1] * (len(record["tokens"]) - len(first))
                for row, (first, record) in enumerate(zip(rows.extras, records))]


def head_tail(ids: list[int], budget: int) -> list[int]:
    """The first quarter and the last three quarters of the budget (Sun et al., 2019: head 128 + tail 382)."""
    if len(ids) <= budget:
        return ids
    head = budget // 4
    return ids[:head] + ids[len(ids) - (budget - head):]


@dataclasses.dataclass(frozen=True)
class HeadTailClassification(PairClassification):
    """PairClassification of single texts, a long one cut to its head and tail instead of its head."""

    def encode(self, records, tokenizer, seq_length) -> Rows:
        ids = [head_tail(row, seq_length - 2) for row in tokenizer.encode_batch([r["text"] for r in records])]
        arrays = id_pair_rows(tokenizer, [(row, None) for row in ids], seq_length)
        dtype = np.float32 if self.num_labels == 1 else np.int32
        arrays["labels"] = np.array([self.label(r) for r in records], dtype)
        return Rows(arrays, np.arange(len(records)))


def _label(record: Record):
    """A record's target (0 for an unlabelled row that is only predicted)."""
    return record.get("label", 0)


def features(task: TaskFile):
    """The encoder format (plmjax.data.downstream.Features) of a task file's kind."""
    from plmjax.data.squad import SpanExtraction

    kind = task.kind
    if kind in ("classification", "regression"):
        pair = "text_pair" in task.columns
        if task.truncation == "head_tail":
            if pair:
                raise TaskFileError(f"task file {task.path!r}: head_tail truncation is for single texts, not pairs")
            return HeadTailClassification(fields("text"), _label, task.num_labels)
        return PairClassification(fields("text", "text_pair" if pair else None), _label, task.num_labels)
    if kind == "multiple_choice":
        return MultipleChoice(lambda r: [(r["text"], choice) for choice in r["choices"]], _label)
    if kind == "token_classification":
        return TokenTagging(task.num_labels)
    if kind == "extractive_qa":  # SQuAD 2.0's no-answer predictions when the train file has unanswerable questions
        return SpanExtraction(version_2=any(row["is_impossible"] for _, row in task._raw("train")))
    raise TaskFileError(f"{kind} tasks train an encoder-decoder: they have no encoder features")


def count_truncated(task: TaskFile, records: list[Record], tokenizer, seq_length: int) -> int:
    """How many records are longer than seq_length tokens (with [CLS]/[SEP], or EOS for text-to-text)."""
    kind = task.kind
    if kind == "extractive_qa":
        return 0  # long contexts are read in overlapping windows, never cut
    if kind == "token_classification":
        return sum(1 + sum(len(tokenizer.encode(w)) or 1 for w in r["tokens"]) + 1 > seq_length for r in records)
    if kind == "text_to_text":
        return sum(len(tokenizer.encode(r["input"])) + 1 > seq_length for r in records)
    texts = [(r["text"], c) for r in records for c in r["choices"]] if kind == "multiple_choice" else [
        (r["text"], r["text_pair"]) for r in records]
    lengths = [len(a) + (len(b) + 1 if pair is not None else 0) + 2 for (_, pair), a, b in zip(
        texts, tokenizer.encode_batch([t for t, _ in texts]), tokenizer.encode_batch([p or "" for _, p in texts]))]
    return sum(length > seq_length for length in lengths)


def warn_truncated(task: TaskFile, split: str, records, tokenizer, seq_length: int) -> int:
    count = count_truncated(task, records, tokenizer, seq_length)
    if count:
        how = "their head and tail kept" if task.truncation == "head_tail" else "cut at the end"
        logging.warning("%d of %d rows of %s are longer than data.seq_length=%d tokens: %s", count, len(records),
                        task.files[split], seq_length, how)
    return count


# ---------------------------------------------------------------- text to text


def text_to_text_arrays(records, vocabulary, seq_length: int, target_length: int, start_id: int) -> dict:
    """Encoder inputs (+EOS) and teacher-forced decoder inputs/targets (+EOS) of input/target records."""
    from plmjax.data.encoding import encoder_inputs

    inputs = encoder_inputs(vocabulary, [r["input"] for r in records], seq_length)
    targets = [list(vocabulary.encode(r["target"]))[: target_length - 1] + [vocabulary.eos_id] for r in records]
    target_ids = _padded(targets, target_length, vocabulary.pad_id)
    decoder_inputs = np.concatenate([np.full((len(records), 1), start_id, np.int32), target_ids[:, :-1]], axis=1)
    weights = np.zeros(target_ids.shape, np.float32)
    for i, row in enumerate(targets):
        weights[i, : len(row)] = 1.0
    return {"encoder_input_ids": inputs, "decoder_input_ids": decoder_inputs, "decoder_target_ids": target_ids,
            "decoder_weights": weights}


# ---------------------------------------------------------------- a run's source and config


def arrays(task: TaskFile, records: list[Record], vocabulary, config) -> dict[str, np.ndarray]:
    """The model features of `records` for the config's lengths."""
    from plmjax.data.downstream import target_length

    if task.kind == "text_to_text":
        return text_to_text_arrays(records, vocabulary, config.data.seq_length, target_length(config),
                                   config.model.decoder_start_token_id)
    return features(task).encode(records, getattr(vocabulary, "tokenizer", vocabulary), config.data.seq_length).arrays


def make_source(config, vocabulary, split: str):
    """Step-keyed batches of the task file's train split (train) or validation split (eval), shuffled per epoch."""
    from plmjax.data.pipeline import BatchSource

    task = TaskFile.read(config.data.task_file)
    which = "train" if split == "train" else "validation"
    records = task.records(which)
    warn_truncated(task, which, records, getattr(vocabulary, "tokenizer", vocabulary), config.data.seq_length)
    return BatchSource(arrays(task, records, vocabulary, config), lambda rows, rng: rows, config.data.batch_size,
                       config.data.seed, split)


def configure(config, path: str, workdir: str):
    """`config` set to train on task file `path`: its copy with the train file's labels saved in WORKDIR/task.json
    (what data.task_file then names, so eval and predict map back to the same labels), and the head's size."""
    from plmjax.config import apply_overrides

    task = TaskFile.read(path)
    task.check()  # every split's rows, before anything trains
    saved = task.save(workdir)
    overrides = [f"data.task_file={saved}"]
    if task.kind != "text_to_text":
        overrides.append(f"model.num_labels={task.num_labels}")
    return apply_overrides(config, overrides)
