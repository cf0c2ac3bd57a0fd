"""Every downstream task as a seqio task in plmjax's registry, in both formats, plus T5's mixtures.

  <task>_t2t        records -> {inputs, targets} text -> seqio tokenize -> EOS after trimming
  <task>_features   records (as JSON) -> encoder rows at data.seq_length (plmjax.data.encoding)
  glue_t2t, superglue_t2t   the text-to-text training tasks of each benchmark, sampled in
                    proportion to their training-set sizes (T5's multi-task fine-tuning)

seqio's 'validation' split is a task's evaluation split (e.g. MNLI's validation_matched, AX's test).
Training rows hold every target of a record (one row per ReCoRD answer); validation rows the first.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import seqio
import tensorflow as tf

from plmjax.config import Config
from plmjax.data import downstream
from plmjax.data.downstream import Benchmark
from plmjax.data.encoding import encoder_tokenizer
from plmjax.data.registry import Batcher, register_mixture, register_task

SPLITS = ("train", "validation")
LENGTH_KEY = "features_length"  # the encoder rows' length, passed to the encoding preprocessor
# Training examples per task (the tfds train splits): mixture rates.
GLUE_SIZES = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "qqp": 363_846, "stsb": 5_749, "mnli": 392_702,
              "qnli": 104_743, "rte": 2_490, "wnli": 635}
SUPERGLUE_SIZES = {"boolq": 9_427, "cb": 250, "copa": 400, "multirc": 27_243, "record": 100_730, "rte": 2_490,
                   "wic": 5_428, "wsc": 554}
# Per head, the encoder row features: name -> (dtype, rank of one row).
_TOKENS = {"input_ids": (tf.int32, 1), "segment_ids": (tf.int32, 1), "attention_mask": (tf.int32, 1)}
ROW_FEATURES = {
    "classification": {**_TOKENS, "labels": (tf.int32, 0)},
    "regression": {**_TOKENS, "labels": (tf.float32, 0)},
    "multiple_choice": {**{k: (dtype, 2) for k, (dtype, _) in _TOKENS.items()}, "labels": (tf.int32, 0)},
    "span": {**_TOKENS, "start_positions": (tf.int32, 0), "end_positions": (tf.int32, 0)},
}


def _records(task: Benchmark, split: str) -> list[downstream.Record]:
    return downstream.load_records(task, "train" if split == "train" else "eval")


def _shuffled(dataset: tf.data.Dataset, size: int, shuffle: bool, seed: int | None) -> tf.data.Dataset:
    return dataset.shuffle(size, seed=seed) if shuffle else dataset


# ---------------------------------------------------------------- text to text


def text_source(task: Benchmark) -> seqio.FunctionDataSource:
    """{inputs, targets} strings: the task's prompt and target(s) of each record."""
    fmt = task.text_to_text

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        records = _records(task, split)
        rows = [(fmt.prompt(r), target) for r in records
                for target in (fmt.targets(r) if split == "train" else fmt.targets(r)[:1])]
        dataset = tf.data.Dataset.from_tensor_slices(
            {"inputs": [p for p, _ in rows], "targets": [t for _, t in rows]})
        return _shuffled(dataset, len(rows), shuffle_files, seed)

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


def text_to_text_task(task: Benchmark, name: str, vocabulary) -> seqio.Task:
    features = {key: seqio.Feature(vocabulary, add_eos=True) for key in ("inputs", "targets")}
    return seqio.Task(name, text_source(task), output_features=features, preprocessors=[
        functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False), seqio.CacheDatasetPlaceholder(),
        seqio.preprocessors.append_eos_after_trim])


def text_to_text_batcher(config: Config, vocabulary) -> Batcher:
    """inputs -> encoder ids, targets -> teacher-forced decoder ids (Seq2SeqTask's batch)."""
    if vocabulary.pad_id != seqio.vocabularies.PAD_ID:
        raise ValueError(f"seqio pads text-to-text rows with id {seqio.vocabularies.PAD_ID}; this vocabulary pads "
                         f"with {vocabulary.pad_id}")
    lengths = {"inputs": config.data.seq_length, "targets": downstream.target_length(config)}
    start = config.model.decoder_start_token_id

    def finalize(rows, rng):
        targets = rows["targets"].astype(np.int32)
        return {
            "encoder_input_ids": rows["inputs"].astype(np.int32),
            "decoder_input_ids": np.concatenate([np.full((len(targets), 1), start, np.int32), targets[:, :-1]], 1),
            "decoder_target_ids": targets,
            "decoder_weights": (targets != vocabulary.pad_id).astype(np.float32),
        }

    return Batcher(lengths, finalize)


# ---------------------------------------------------------------- encoder features


def record_source(task: Benchmark) -> seqio.FunctionDataSource:
    """Each record as one JSON string (records nest lists and dicts that tf.data cannot hold)."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        records = [json.dumps(r) for r in _records(task, split)]
        return _shuffled(tf.data.Dataset.from_tensor_slices({"record": records}), len(records), shuffle_files, seed)

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


def _rows_shape(rank: int, length: int) -> list[int | None]:
    """Shape of a record's rows of one feature: [rows], [rows, length] or [rows, choices, length]."""
    return [None] + ([None] * (rank - 1) + [length] if rank else [])


def encode_rows(dataset: tf.data.Dataset, sequence_length, task: Benchmark, tokenizer) -> tf.data.Dataset:
    """Each JSON record -> its encoder rows (one, or a window / candidate each) at the run's length."""
    specs = ROW_FEATURES[task.features.head]
    length = sequence_length[LENGTH_KEY]

    def encode(record: bytes):
        arrays = task.features.encode([json.loads(record)], tokenizer, length).arrays
        return [arrays[key].astype(dtype.as_numpy_dtype) for key, (dtype, _) in specs.items()]

    def rows(example):
        values = tf.numpy_function(encode, [example["record"]], [dtype for dtype, _ in specs.values()],
                                   stateful=False)
        return {key: tf.ensure_shape(value, _rows_shape(rank, length))
                for (key, (_, rank)), value in zip(specs.items(), values)}

    return dataset.map(rows, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def features_task(task: Benchmark, name: str, vocabulary) -> seqio.Task:
    tokenizer = encoder_tokenizer(vocabulary)
    features = {
        key: seqio.Feature(vocabulary if key == "input_ids" else seqio.PassThroughVocabulary(0), add_eos=False,
                           dtype=dtype, rank=rank)
        for key, (dtype, rank) in ROW_FEATURES[task.features.head].items()
    }
    return seqio.Task(name, record_source(task), output_features=features,
                      preprocessors=[functools.partial(encode_rows, task=task, tokenizer=tokenizer)])


def features_batcher(config: Config, vocabulary) -> Batcher:
    """Rows are model-ready as encoded; seqio only carries their length to the encoder."""
    return Batcher({LENGTH_KEY: config.data.seq_length}, lambda rows, rng: rows)


# ---------------------------------------------------------------- registration


def _register() -> None:
    for name, task in downstream.benchmarks().items():
        register_task(f"{name}_t2t", lambda seqio_name, vocab, t=task: text_to_text_task(t, seqio_name, vocab),
                      text_to_text_batcher)
        register_task(f"{name}_features", lambda seqio_name, vocab, t=task: features_task(t, seqio_name, vocab),
                      features_batcher)
    for benchmark, sizes in (("glue", GLUE_SIZES), ("superglue", SUPERGLUE_SIZES)):
        register_mixture(f"{benchmark}_t2t", [(f"{benchmark}_{name}_t2t", size) for name, size in sizes.items()])


_register()
