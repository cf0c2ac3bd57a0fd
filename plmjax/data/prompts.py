"""T5's GLUE-style text-to-text format and the label-classification task built on it.

A prompt is the benchmark name then `key: value` for each field ("rte sentence1: ... sentence2:
..."); the target is the label's name, and the parser maps generated text back to the class id
(-1, always wrong, for text that names no class).
"""

from __future__ import annotations

from collections.abc import Callable

from plmjax.data.downstream import Canonical, Benchmark, Features, Record, TextToText, check_label, label


def t5_prompt(benchmark: str, keys: tuple[str, ...], field: Callable[[Record, str], str] | None = None):
    """record -> 'benchmark key1: value1 key2: value2 ...' (field(record, key) may clean a value)."""
    field = field or (lambda record, key: record[key])
    return lambda record: " ".join([benchmark, *(f"{key}: {field(record, key)}" for key in keys)])


def parse_label(names: tuple[str, ...]):
    """Generated text -> the id of the label it spells (compared as the tokenizer writes labels), or -1."""

    def parse(text: str, record: Record, canonical: Canonical) -> int:
        written = [canonical(name) for name in names]
        return written.index(text.strip()) if text.strip() in written else -1

    return parse


def classification_task(name: str, eval_data: tuple[str, str], train_data: tuple[str, str] | None,
                        prompt: Callable[[Record], str], names: tuple[str, ...], features: Features,
                        metric, check: Callable[[Record], None] | None = None,
                        train_instead: str = "") -> Benchmark:
    """A task whose gold is the record's class id, checked to lie in [0, len(names))."""

    def check_record(record: Record) -> None:
        check_label(record, names)
        if check:
            check(record)

    text_to_text = TextToText(prompt=prompt, targets=lambda record: [names[label(record)]], parse=parse_label(names))
    return Benchmark(name=name, eval_data=eval_data, train_data=train_data, gold=label, metric=metric,
                          text_to_text=text_to_text, features=features, check=check_record,
                          train_instead=train_instead)
