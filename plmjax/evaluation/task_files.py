"""`plmjax eval --task FILE.json` and `plmjax predict`: a checkpoint on the user's own task files.

Predictions come back as the user wrote the labels (the run's WORKDIR/task.json keeps them); metrics are
scikit-learn's, SciPy's, nervaluate's (entity spans, strict: type and boundaries, as seqeval scores them),
the official SQuAD script's and rouge-score's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from plmjax.data import metrics
from plmjax.data.task_files import SAVED, TaskFile, TaskFileError, arrays, features


def saved_task(checkpoint: str, overrides=()) -> TaskFile:
    path = os.path.join(checkpoint, SAVED)
    if not os.path.isfile(path):
        raise TaskFileError(f"{checkpoint!r} was not trained on a task file (no {SAVED}); train it with "
                            "`plmjax train --task FILE.json`")
    return TaskFile.read(path)


class Predictor:
    """A checkpoint's model, vocabulary and task, predicting records of the task's kind."""

    def __init__(self, checkpoint: str, overrides=()):
        from plmjax.convert import directory as checkpoint_dir
        from plmjax.models.task import make_model_task

        self.checkpoint = checkpoint
        self.config = checkpoint_dir.read_config(checkpoint, overrides)
        self.task = saved_task(checkpoint)
        self.vocab = checkpoint_dir.load_tokenizer(checkpoint, self.config)
        self.model_task = make_model_task(self.config)
        self.params = None

    def outputs(self, records) -> tuple[list, Any]:
        """(kind-native predictions, the head's raw outputs or None)."""
        from plmjax.evaluation.downstream import generate_texts, predict_rows, restore

        if self.task.kind == "text_to_text":
            if self.params is None:
                example = arrays(self.task, records[:1], self.vocab, self.config)
                self.params = restore(self.checkpoint, self.model_task, example)
            return generate_texts(self.model_task.module, self.params, self.vocab, [r["input"] for r in records],
                                  self.config), None
        fmt = features(self.task)
        rows = fmt.encode(records, getattr(self.vocab, "tokenizer", self.vocab), self.config.data.seq_length)
        if self.params is None:
            self.params = restore(self.checkpoint, self.model_task, rows.arrays)
        outputs = predict_rows(self.model_task, self.params, rows.arrays, self.config.data.batch_size)
        return fmt.predictions(outputs, rows, records), outputs

    def rows(self, records) -> list[dict]:
        """Each record's prediction as the user wrote labels: {"prediction": ..., ["probabilities": {...}]}."""
        predictions, outputs = self.outputs(records)
        task, out = self.task, []
        for i, (record, prediction) in enumerate(zip(records, predictions)):
            row: dict[str, Any] = {}
            if task.kind == "classification":
                row["prediction"] = task.labels[prediction]
                logits = np.asarray(outputs[i], np.float64)
                probabilities = np.exp(logits - logits.max())
                probabilities /= probabilities.sum()
                row["probabilities"] = {str(label): float(p) for label, p in zip(task.labels, probabilities)}
            elif task.kind == "multiple_choice":
                row.update(prediction=record["choices"][prediction], choice=int(prediction))
            elif task.kind == "token_classification":
                row["prediction"] = [task.labels[t] if t >= 0 else _outside(task) for t in prediction]
            else:  # regression (a float), extractive QA (the answer's text), text to text (the text)
                row["prediction"] = prediction
            out.append(row)
        return out


def _outside(task: TaskFile):
    """The tag of words cut off by truncation: 'O' when the task has it."""
    return next((t for t in task.labels if str(t) == "O"), None)


def score(task: TaskFile, records, predictions) -> dict[str, float]:
    """The kind's metrics, in percent: classification accuracy, macro-F1 and MCC; regression Pearson and
    Spearman; multiple choice accuracy; tagging entity-span precision/recall/F1; QA EM/F1; text EM and ROUGE-L."""
    kind = task.kind
    if kind in ("classification", "multiple_choice"):
        golds = [r["label"] for r in records]
        scores = metrics.accuracy(golds, predictions)
        if kind == "classification":
            import sklearn.metrics

            scores["macro_f1"] = 100 * sklearn.metrics.f1_score(golds, predictions, average="macro", zero_division=0)
            scores.update(metrics.matthews_corr(golds, predictions))
        return scores
    if kind == "regression":
        return metrics.pearson_spearman([r["label"] for r in records], predictions)
    if kind == "token_classification":
        from nervaluate import Evaluator

        names = [str(t) for t in task.labels]
        golds = [[names[t] for t in r["tags"]] for r in records]
        guessed = [[names[t] if t >= 0 else str(_outside(task)) for t in p] for p in predictions]
        types = sorted({name.split("-", 1)[1] for name in names if "-" in name})
        strict = Evaluator(golds, guessed, tags=types, loader="list").evaluate()["overall"]["strict"]
        return {"span_precision": 100 * strict.precision, "span_recall": 100 * strict.recall,
                "span_f1": 100 * strict.f1}
    if kind == "extractive_qa":
        from plmjax.data.squad import answers

        return metrics.squad_v2([answers(r) for r in records], predictions)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    targets = [r["target"] for r in records]
    return {"exact_match": 100 * float(np.mean([t.strip() == p.strip() for t, p in zip(targets, predictions)])),
            "rougeL": 100 * float(np.mean([scorer.score(t, p)["rougeL"].fmeasure for t, p in zip(targets, predictions)]))}


def evaluate(checkpoint: str, path: str | None = None, split: str = "validation", overrides=()):
    """A Report of the checkpoint on `split` of task file `path` (default: the one it was trained on)."""
    from plmjax.evaluation.downstream import Report

    predictor = Predictor(checkpoint, overrides)
    task = predictor.task
    if path is not None:  # the user's file, read with the labels the run was trained on
        given = TaskFile.read(path)
        task = dataclasses.replace(given, labels=predictor.task.labels) if predictor.task.labels else given
        predictor.task = task
    records = task.records(split)
    predictions, _ = predictor.outputs(records)
    name = os.path.splitext(os.path.basename(task.files[split]))[0]
    return Report(name, checkpoint, {f"{name} ({split})": score(task, records, predictions)})


def predict(checkpoint: str, input_path: str, out_path: str, overrides=()) -> int:
    """Write one JSON line per row of `input_path` (the task's format, labels optional), in order; returns rows."""
    predictor = Predictor(checkpoint, overrides)
    records = predictor.task.inputs(input_path)
    with open(out_path, "w", encoding="utf-8") as f:
        for row in predictor.rows(records):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(records)
