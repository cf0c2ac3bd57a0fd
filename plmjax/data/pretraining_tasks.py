"""Pretraining tasks in seqio for every registered objective (span corruption, MLM, causal LM, plug-ins'),
over C4, pydoc and text files.

Names: `{c4,pydoc}_{span_corruption,mlm,lm,...}`; `c4_*:CONFIG` for the other tfds C4 configs
(en.noclean, realnewslike, webtextlike, multilingual); `text_files_*:GLOB` for UTF-8 files
(blank lines separate documents); mixtures `c4_pydoc_*` (C4 with the Python reference at 10%).

Each task keeps a record's `text`, tokenizes it, appends EOS after each document, and packs the
token stream into full windows (T5's concat-and-split: no padding; only the tail is dropped). Encoder
windows (MLM's) are [CLS] ... [SEP], documents separated by [SEP] (RoBERTa's full sentences, no NSP). The
objective itself runs per batch in numpy (plmjax.objectives) with a generator keyed by
(seed, step, split), so masks and spans are fresh each time a window comes back and a resumed
run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import seqio
import tensorflow as tf

from plmjax.config import Config
from plmjax.data import pipeline
from plmjax.data.corpus import load_documents
from plmjax.data.registry import Batcher, register_family, register_mixture, register_task
from plmjax.objectives import builtin  # noqa: F401  (registers the built-in objectives)
from plmjax.objectives import registry as registry_lib
from plmjax.objectives.registry import Objective

C4_VERSION = "3.1.0"
LOCAL_EVAL_FRACTION = 0.05  # pydoc / text_files: the last 5% of documents are the validation split
SPLITS = ("train", "validation")
C4_PYDOC_RATES = (0.9, 0.1)


# ---------------------------------------------------------------------- preprocessors


def keep_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each record's `text` as `targets`; a record without string text or with bad UTF-8 is an error."""
    spec = dataset.element_spec
    text = spec.get("text") if isinstance(spec, dict) else None
    if text is None or text.dtype != tf.string or text.shape.rank != 0:
        raise ValueError(f"pretraining records need a string feature 'text'; these records have {spec}")

    def check(record):
        valid = tf.strings.unicode_decode(record["text"], "UTF-8", errors="strict")  # raises on bad bytes
        with tf.control_dependencies([valid]):
            return {"targets": tf.identity(record["text"])}

    return dataset.map(check, num_parallel_calls=tf.data.AUTOTUNE)


def pack(
    dataset: tf.data.Dataset,
    sequence_length: dict[str, int],
    output_features: dict[str, seqio.Feature],
    prefix: Sequence[int] = (),
    suffix: Sequence[int] = (),
) -> tf.data.Dataset:
    """Documents + EOS, concatenated and cut into full windows of `targets` length, wrapped."""
    eos = output_features["targets"].vocabulary.eos_id
    window = sequence_length["targets"] - len(prefix) - len(suffix)
    if window < 1:
        raise ValueError(f"sequence length {sequence_length['targets']} leaves no room for text")
    stream = dataset.map(lambda record: tf.concat([record["targets"], [eos]], axis=0)).unbatch()
    wrap = (tf.constant(prefix, tf.int32), tf.constant(suffix, tf.int32))
    return stream.batch(window, drop_remainder=True).map(lambda w: {"targets": tf.concat([wrap[0], w, wrap[1]], 0)})


def _packer(name: str, objective: str, vocabulary):
    """`pack`, wrapping an encoder objective's (MLM's) windows in [CLS] ... [SEP]."""
    if registry_lib.OBJECTIVES[objective].arch != "encoder":
        return pack
    if None in (vocabulary.cls_id, vocabulary.sep_id, vocabulary.mask_id):
        raise ValueError(f"{name} needs [CLS], [SEP] and [MASK]: use a WordPiece vocabulary, not {vocabulary.kind}")
    return functools.partial(pack, prefix=(vocabulary.cls_id,), suffix=(vocabulary.sep_id,))


# ---------------------------------------------------------------------- sources and tasks


def c4_source(config_name: str) -> seqio.TfdsDataSource:
    """tfds `c4/CONFIG`, read where it was prepared (TFDS_DATA_DIR, e.g. gs://...); never generated here."""
    return seqio.TfdsDataSource(f"c4/{config_name}:{C4_VERSION}", splits=SPLITS, read_only=True)


def corpus_source(spec: str) -> seqio.FunctionDataSource:
    """A plmjax corpus spec ('pydoc', 'text_files:GLOB') as documents; the last 5% are validation."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        documents = pipeline.split_documents(
            load_documents(spec), LOCAL_EVAL_FRACTION, "eval" if split == "validation" else split
        )
        dataset = tf.data.Dataset.from_tensor_slices({"text": documents})
        return dataset.shuffle(len(documents), seed=seed) if shuffle_files else dataset

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


def seqio_task(name: str, vocabulary, source: seqio.DataSource, objective: str) -> seqio.Task:
    """Text records -> tokens -> (cacheable) -> packed windows under `targets`."""
    return seqio.Task(
        name,
        source,
        output_features={"targets": seqio.Feature(vocabulary, add_eos=True)},
        preprocessors=[
            keep_text,
            functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
            seqio.CacheDatasetPlaceholder(),
            _packer(name, objective, vocabulary),
        ],
    )


def _read_as(objective: Objective):
    """The objective's seqio batcher, refusing a config that trains another objective."""

    def batcher(config: Config, vocabulary) -> Batcher:
        if config.objective.kind != objective.name:
            raise ValueError(
                f"this seqio task trains objective.kind={objective.name!r}, but the config says "
                f"{config.objective.kind!r}; pick a task for the model's objective"
            )
        return objective.batcher(config, vocabulary)

    return batcher


_REGISTERED: set[str] = set()


def register_objective_tasks() -> None:
    """c4_*, pydoc_*, text_files_* and c4_pydoc_* for every registered objective with a seqio batcher (once each,
    so objectives registered by plug-ins after this module's import get theirs on the next look-up)."""
    for objective in list(registry_lib.OBJECTIVES.values()):
        name = objective.seqio_name
        if objective.batcher is None or name in _REGISTERED:
            continue
        _REGISTERED.add(name)
        batcher, kind = _read_as(objective), objective.name
        register_family(
            f"c4_{name}",
            lambda task_name, vocab, config, o=kind: seqio_task(task_name, vocab, c4_source(config), o),
            batcher, argument="CONFIG", default="en",
        )
        register_task(
            f"pydoc_{name}", lambda task_name, vocab, o=kind: seqio_task(task_name, vocab, corpus_source("pydoc"), o),
            batcher,
        )
        register_family(
            f"text_files_{name}",
            lambda task_name, vocab, glob, o=kind: seqio_task(task_name, vocab, corpus_source(f"text_files:{glob}"), o),
            batcher, argument="GLOB",
        )
        register_mixture(f"c4_pydoc_{name}", list(zip((f"c4_{name}", f"pydoc_{name}"), C4_PYDOC_RATES)))


register_objective_tasks()
