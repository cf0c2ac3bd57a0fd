"""Downstream tasks (GLUE, SuperGLUE, SQuAD): what a task is, where its records come from, its names.

A `Benchmark` names its tfds data, the gold value of a record, its official metric and two
formats: `text_to_text` (T5 prompts and label strings, for encoder-decoder models) and `features`
(rows for an encoder head, see plmjax.data.encoding). Records are plain dicts (text decoded to
str); a record that breaks the task's assumptions is an error naming the task, split and record,
never skipped.

Registered names are `<benchmark>_<dataset>_<format>` with the formats `t2t` and `features`;
`resolve("glue_rte", arch)` picks the format the model architecture trains (encoder-decoder:
t2t; encoder: features). SUITES groups the tasks a benchmark score averages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

Record = dict[str, Any]
# Text as the tokenizer writes it back: decode(encode(text)). Generated text can only be compared
# in this form (a lowercasing WordPiece vocabulary, for one, spaces out punctuation).
Canonical = Callable[[str], str]
FORMATS = {"t2t": "encoder_decoder", "features": "encoder"}
DEFAULT_TARGET_LENGTH = 32  # text-to-text target tokens (with EOS) when data.target_length is 0


@dataclasses.dataclass(frozen=True)
class TextToText:
    """T5 style: a prompt, target strings, and the parser from generated text to a prediction."""

    prompt: Callable[[Record], str]
    targets: Callable[[Record], list[str]]  # training rows, one per target; a validation row takes the first
    parse: Callable[[str, Record, Canonical], Any]
    gold: Callable[[Record, Canonical], Any] | None = None  # when the metric needs canonical golds


@dataclasses.dataclass
class Rows:
    """Encoder features of some records: arrays with a leading row axis and each row's record."""

    arrays: dict[str, np.ndarray]
    record: np.ndarray  # int [rows]
    extras: list[Any] = dataclasses.field(default_factory=list)  # per row, what predictions need


class Features(Protocol):
    """An encoder format: `head` names the fine-tuning head (plmjax.models.finetuning.HEADS)."""

    head: str
    num_labels: int

    def encode(self, records: list[Record], tokenizer, seq_length: int) -> Rows: ...

    def predictions(self, outputs: Any, rows: Rows, records: list[Record]) -> list[Any]: ...


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One evaluated dataset: tfds data, gold values, official metric, both formats."""

    name: str  # without the format suffix, e.g. glue_mnli_matched
    eval_data: tuple[str, str]  # (tfds name, split)
    train_data: tuple[str, str] | None  # None: evaluation only (a diagnostic)
    gold: Callable[[Record], Any]
    metric: Callable[[list, list, list[Record]], dict[str, float]]
    text_to_text: TextToText
    features: Features
    check: Callable[[Record], None]  # raises ValueError for a malformed record
    train_instead: str = ""  # for evaluation-only tasks: the task whose training data fits


def target_length(config) -> int:
    """Text-to-text target tokens, EOS included: what training trims to and evaluation generates."""
    return config.data.target_length or DEFAULT_TARGET_LENGTH


def on_values(metric: Callable[..., dict[str, float]]) -> Callable[[list, list, list[Record]], dict[str, float]]:
    """A (golds, predictions, records) metric from a (golds, predictions) one."""
    return lambda golds, predictions, records: metric(golds, predictions)


# ---------------------------------------------------------------- names

BENCHMARKS: dict[str, Benchmark] = {}
SUITES: dict[str, tuple[str, ...]] = {}


def add(task: Benchmark) -> None:
    if task.name in BENCHMARKS:
        raise ValueError(f"downstream task {task.name!r} is defined twice")
    BENCHMARKS[task.name] = task


def _load_definitions() -> None:
    """Import every benchmark module (each adds its benchmarks and its suite when first imported), whichever of
    them was imported already: importing squad for its span features alone must not hide glue and superglue."""
    from plmjax.data import glue, squad, superglue  # noqa: F401


def benchmarks() -> dict[str, Benchmark]:
    """Every defined task by name (without format suffix)."""
    _load_definitions()
    return dict(BENCHMARKS)


def training_data(name: str) -> tuple[str, str]:
    """The tfds data a model for task `name` trains on: its own, or a diagnostic's stand-in task's."""
    task = benchmarks()[name]
    return task.train_data or benchmarks()[task.train_instead].train_data


def parse(name: str) -> tuple[str, str | None] | None:
    """(task or benchmark, format or None) that `name` means, or None if it is neither."""
    _load_definitions()
    for fmt in FORMATS:
        base = name.removesuffix(f"_{fmt}")
        if base != name and (base in BENCHMARKS or base in SUITES):
            return base, fmt
    return (name, None) if name in BENCHMARKS or name in SUITES else None


def resolve(name: str, arch: str) -> tuple[str, str]:
    """(task or benchmark, format) of `name` for a model of `arch`; the format follows the architecture."""
    parsed = parse(name)
    if parsed is None:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(BENCHMARKS)} (each also as NAME_t2t and "
                         f"NAME_features); benchmarks: {', '.join(SUITES)}")
    base, fmt = parsed
    wanted = {a: f for f, a in FORMATS.items()}.get(arch)
    if wanted is None:
        raise ValueError(f"downstream tasks fine-tune encoder or encoder_decoder models, not model.arch={arch!r}")
    if fmt not in (None, wanted):
        raise ValueError(f"{name!r} is in the {fmt} format, for model.arch={FORMATS[fmt]!r}, not {arch!r}; "
                         f"name it {base!r} to get the format this model trains")
    return base, wanted


def expand(name: str) -> list[str]:
    """The tasks `name` means (format suffix dropped): a benchmark's, or the one task."""
    parsed = parse(name)
    if parsed is None:
        resolve(name, "encoder")  # raises, listing the known names
    return list(SUITES.get(parsed[0], (parsed[0],)))


# ---------------------------------------------------------------- records


def _plain(value: Any) -> Any:
    """tfds numpy values -> str, int, float, lists and dicts of them."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_records(task: Benchmark, which: str) -> list[Record]:
    """Every record of the task's `which` ('train' or 'eval') split, checked, in tfds order."""
    import tensorflow_datasets as tfds

    if which == "train" and task.train_data is None:
        raise ValueError(f"{task.name} is evaluation-only (its tfds data has no training split); "
                         f"fine-tune on {task.train_instead} and evaluate with --task {task.name}")
    tfds_name, split = task.train_data if which == "train" else task.eval_data
    dataset = tfds.load(tfds_name, split=split, shuffle_files=False)
    records = [_plain(example) for example in tfds.as_numpy(dataset)]
    if not records:
        raise ValueError(f"{task.name}: tfds {tfds_name} split {split!r} is empty")
    for index, record in enumerate(records):
        try:
            task.check(record)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{task.name}: malformed record {index} of tfds {tfds_name} split {split!r}: "
                             f"{error}") from None
    return records


def label(record: Record) -> Any:
    """The record's label: a class id, or a score."""
    return record["label"]


def check_label(record: Record, names: tuple[str, ...]) -> None:
    """A class id in [0, len(names)); -1 (a hidden test label) cannot be scored."""
    value = record["label"]
    if not (isinstance(value, int) and 0 <= value < len(names)):
        hidden = " (-1 marks a hidden test label: this split is scored by the benchmark's server)" \
            if value == -1 else ""
        raise ValueError(f"label {value!r} is outside [0, {len(names)}) = {list(names)}{hidden}")
