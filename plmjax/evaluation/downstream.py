"""`plmjax eval --task`: a checkpoint's official scores on downstream tasks, as a table.

Each task's whole evaluation split is predicted -- an encoder head on every row, or greedy generation
parsed back into a prediction -- and scored by the task's official metric (plmjax.data.metrics); a
benchmark name scores each of its tasks and adds the benchmark score. A benchmark's tasks come from
CHECKPOINT/<task> when that directory exists (encoders: one fine-tuned run per task), else from
CHECKPOINT itself (a multi-task text-to-text model). The table is printed and written to
CHECKPOINT/eval_<name>.json and .md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from plmjax.config import Config, ConfigError
from plmjax.data import downstream, metrics
from plmjax.data.encoding import encoder_inputs, encoder_tokenizer
from plmjax.models.finetuning import finetuning_config
from plmjax.models.task import make_model_task

BENCHMARK_SCORES = {"glue": metrics.glue_score, "superglue": metrics.superglue_score}


@dataclasses.dataclass
class Report:
    """Per-task metrics, the benchmark score if a benchmark was named, and where they came from."""

    name: str
    checkpoint: str
    tasks: dict[str, dict[str, float]]
    score: float | None = None

    def rows(self) -> list[tuple[str, str, float]]:
        rows = [(task, metric, value) for task, scores in self.tasks.items() for metric, value in scores.items()]
        return rows + ([(f"{self.name} score", "", self.score)] if self.score is not None else [])

    def text(self) -> str:
        width = max(len(task) for task, _, _ in self.rows())
        lines = [f"{self.name} on {self.checkpoint}"]
        rows = [f"  {task:<{width}}  {metric:<14} {value:8.2f}" for task, metric, value in self.rows()]
        return "\n".join(lines + rows)

    def markdown(self) -> str:
        lines = [f"## {self.name} ({self.checkpoint})", "", "| task | metric | score |", "|---|---|---:|"]
        return "\n".join(lines + [f"| {t} | {m} | {v:.2f} |" for t, m, v in self.rows()]) + "\n"

    def write(self, directory: str) -> list[str]:
        """CHECKPOINT/eval_<name>.json and .md; returns their paths."""
        base = os.path.join(directory, f"eval_{self.name}")
        with open(base + ".json", "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)
        with open(base + ".md", "w") as f:
            f.write(self.markdown())
        return [base + ".json", base + ".md"]


# ---------------------------------------------------------------- loading


def vocabulary(directory: str, config: Config):
    """The vocabulary the checkpoint was trained with: data.vocab, else the one in its directory."""
    from plmjax.data import vocabularies

    candidates = [config.data.vocab] if config.data.vocab else [
        os.path.join(directory, name) for name in sorted(set(vocabularies.FILE_NAMES.values()))]
    for path in candidates:
        if os.path.exists(path):
            return vocabularies.load_vocabulary(path)
    raise ConfigError(f"{directory!r} holds no vocabulary ({', '.join(candidates)}); "
                      "name one with --set data.vocab=PATH")


def restore(directory: str, model_task, example: dict[str, np.ndarray]):
    """The checkpoint's parameters for `model_task` (shapes from one example row), on the host."""
    from plmjax.convert import directory as checkpoint_dir

    one = jax.tree.map(lambda x: x[:1], example)
    init = lambda key: nn.meta.unbox(model_task.init(key, one)["params"])  # noqa: E731
    seed = lambda: checkpoint_dir.read_config(directory).train.seed  # noqa: E731
    return checkpoint_dir.restore_params(directory, jax.eval_shape(init, jax.random.key(0)),  # a trainable-only
                                         fresh=lambda: jax.jit(init)(jax.random.key(seed())))[0]  # run's base


# ---------------------------------------------------------------- predictions


def _batches(arrays: dict[str, np.ndarray], batch_size: int):
    """(batch, real rows) of `batch_size` rows each; the last one is filled up with copies of its last row."""
    total = len(next(iter(arrays.values())))
    for start in range(0, total, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
        count = len(next(iter(batch.values())))
        yield {k: np.concatenate([v, np.repeat(v[-1:], batch_size - count, 0)]) for k, v in batch.items()}, count


def predict_rows(model_task, params, arrays: dict[str, np.ndarray], batch_size: int) -> Any:
    """The head's outputs for every row, as numpy arrays with a leading row axis."""
    predict = jax.jit(model_task.predict)
    outputs = [jax.tree.map(lambda x, n=count: np.asarray(x)[:n], predict(params, batch))
               for batch, count in _batches(arrays, batch_size)]
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def generate_texts(module, params, vocab, prompts: list[str], config: Config) -> list[str]:
    """Greedy generations (cut at EOS) for each prompt."""
    from plmjax import decoding

    ids = {"ids": encoder_inputs(vocab, prompts, config.data.seq_length)}
    texts = []
    for batch, count in _batches(ids, config.data.batch_size):
        out = np.asarray(decoding.generate(module, params, batch["ids"], eos_id=vocab.eos_id,
                                           max_new_tokens=downstream.target_length(config)))
        for row in out[:count].tolist():
            texts.append(vocab.decode(row[: row.index(vocab.eos_id)] if vocab.eos_id in row else row))
    return texts


# ---------------------------------------------------------------- scoring


def score_task(directory: str, name: str, config: Config, vocab) -> dict[str, float]:
    """The official metrics of the checkpoint on task `name` (config: the checkpoint's, set for the task)."""
    task, (_, fmt) = downstream.benchmarks()[name], downstream.resolve(name, config.model.arch)
    records = downstream.load_records(task, "eval")
    model_task = make_model_task(config)
    if fmt == "features":
        rows = task.features.encode(records, encoder_tokenizer(vocab), config.data.seq_length)
        params = restore(directory, model_task, rows.arrays)
        outputs = predict_rows(model_task, params, rows.arrays, config.data.batch_size)
        predictions, golds = task.features.predictions(outputs, rows, records), [task.gold(r) for r in records]
    else:
        t2t = task.text_to_text
        prompts = [t2t.prompt(r) for r in records]
        ids = encoder_inputs(vocab, prompts[:1], config.data.seq_length)
        params = restore(directory, model_task, {"encoder_input_ids": ids, "decoder_input_ids": ids[:, :1]})
        canonical = lambda text: vocab.decode(vocab.encode(text))  # noqa: E731
        texts = generate_texts(model_task.module, params, vocab, prompts, config)
        predictions = [t2t.parse(text, r, canonical) for text, r in zip(texts, records)]
        golds = [t2t.gold(r, canonical) if t2t.gold else task.gold(r) for r in records]
    return task.metric(golds, predictions, records)


def _check_head(trained: Config, task: str) -> None:
    """An encoder's task head scores only the tasks whose training data it was fine-tuned on."""
    parsed = downstream.parse(trained.data.mixture)
    if trained.model.arch != "encoder" or parsed is None:
        return
    if downstream.training_data(parsed[0]) != downstream.training_data(task):
        raise ValueError(f"the checkpoint's head was fine-tuned on {parsed[0]}, not for {task}; "
                         f"give each task its own run in CHECKPOINT/{task}")


def evaluate(checkpoint: str, name: str, overrides: list[str] | tuple[str, ...] = ()) -> Report:
    """Score `checkpoint` on a task or benchmark `name` (see the module docstring)."""
    from plmjax.convert import directory as checkpoint_dir

    results, benchmark = {}, downstream.parse(name)
    for task in downstream.expand(name):
        directory = os.path.join(checkpoint, task) if os.path.isdir(os.path.join(checkpoint, task)) else checkpoint
        trained = checkpoint_dir.read_config(directory, overrides)
        config = finetuning_config(trained, task)
        try:
            _check_head(trained, task)
            results[task] = score_task(directory, task, config, vocabulary(directory, config))
        except ValueError as error:
            raise ValueError(f"{task} on {directory}: {error}") from None
    score = BENCHMARK_SCORES[benchmark[0]](results) if benchmark[0] in BENCHMARK_SCORES else None
    return Report(name, checkpoint, results, score)
