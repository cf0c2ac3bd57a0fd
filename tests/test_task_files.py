"""Fine-tuning on the user's own files (`--task FILE.json`): every kind end to end through the CLI, label names
kept from train to predict, eval's metrics equal to scikit-learn's (and the others') on predict's output, and
bad files refused before any step with an error naming the file and line."""

import csv
import json
import os
import re

import numpy as np
import pytest
import sklearn.metrics

from plmjax.cli import main
from plmjax.data.task_files import TaskFile, TaskFileError, head_tail

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
QUICK = ["--set", "train.num_steps=2", "--set", "data.batch_size=4", "--set", "data.seq_length=32",
         "--set", "train.eval_steps=1", "--set", "model.num_layers=1", "--set", "mesh.data=1", "--no-progress"]
WORDS = "the function returns a value when the object is called with its arguments and a default".split()


def _write(path, rows):
    if str(path).endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if str(path).endswith(".tsv") else ",")
            writer.writeheader()
            writer.writerows(rows)


def _task(directory, spec, splits):
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        _write(directory / spec[name], rows)
    (directory / "task.json").write_text(json.dumps(spec))
    return str(directory / "task.json")


def _sentence(rng, n=6):
    return " ".join(rng.choice(WORDS, n))


def _classification(tmp_path, ext=".jsonl"):
    rng = np.random.default_rng(0)
    rows = [{"text": _sentence(rng), "other": _sentence(rng), "label": ["yes", "no", 3][i % 3]} for i in range(24)]
    spec = {"kind": "classification", "train": f"train{ext}", "validation": f"dev{ext}", "text": "text",
            "text_pair": "other", "label": "label"}
    return _task(tmp_path / "cls", spec, {"train": rows[:16], "validation": rows[16:]})


def _train(task, workdir, config="bert_tiny.py"):
    return main(["train", "--config", os.path.join(ROOT, "configs", config), "--workdir", str(workdir),
                 "--task", task] + QUICK)


def _predictions(workdir, inputs, tmp_path):
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--checkpoint", str(workdir), "--input", inputs, "--out", str(out)]) == 0
    return [json.loads(line) for line in open(out)]


def test_classification_keeps_label_names_and_eval_matches_sklearn_on_predictions(tmp_path, capsys):
    task = _classification(tmp_path)
    assert _train(task, tmp_path / "run") == 0
    trained = capsys.readouterr().out
    saved = json.load(open(tmp_path / "run" / "task.json"))
    assert saved["labels"] == [3, "no", "yes"]  # as the train file writes them, a number among strings too
    rows_out = _predictions(tmp_path / "run", str(tmp_path / "cls" / "dev.jsonl"), tmp_path)
    golds = [json.loads(line)["label"] for line in open(tmp_path / "cls" / "dev.jsonl")]
    predicted = [row["prediction"] for row in rows_out]
    assert len(rows_out) == 8 and set(predicted) <= {3, "no", "yes"}
    assert all(abs(sum(row["probabilities"].values()) - 1) < 1e-5 for row in rows_out)
    keys = [str(g) for g in golds], [str(p) for p in predicted]
    accuracy = 100 * sklearn.metrics.accuracy_score(*keys)
    macro_f1 = 100 * sklearn.metrics.f1_score(*keys, average="macro", zero_division=0)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--task", task]) == 0
    evaluated = capsys.readouterr().out
    for name, value in (("accuracy", accuracy), ("macro_f1", macro_f1)):
        assert re.search(rf"{name}\s+{value:.2f}", evaluated), evaluated
        assert re.search(rf"{name}\s+{value:.2f}", trained), trained  # train ends with the same table

    # The run records its head, so it exports as HF's classifier, which gives predict's probabilities.
    import torch
    import transformers

    from plmjax.data.tokenizer import Tokenizer
    from plmjax.data.task_files import features

    assert main(["convert", "--to", "hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    model, info = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    saved_task = TaskFile.read(str(tmp_path / "run" / "task.json"))
    rows = features(saved_task).encode(saved_task.records("validation"),
                                       Tokenizer.load(str(tmp_path / "run" / "tokenizer.json")), 32).arrays
    with torch.no_grad():
        logits = model.eval()(input_ids=torch.from_numpy(rows["input_ids"]).long(),
                              token_type_ids=torch.from_numpy(rows["segment_ids"]).long(),
                              attention_mask=torch.from_numpy(rows["attention_mask"]).long()).logits
    theirs = torch.softmax(logits, -1).numpy()
    ours = np.array([[row["probabilities"][str(label)] for label in saved["labels"]] for row in rows_out])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("kind", ["regression", "multiple_choice", "token_classification", "extractive_qa"])
def test_each_encoder_kind_trains_evaluates_and_predicts(tmp_path, capsys, kind):
    rng = np.random.default_rng(1)
    if kind == "regression":
        rows = [{"sentence": _sentence(rng), "score": float(i % 5)} for i in range(12)]
        spec = {"kind": kind, "train": "train.tsv", "validation": "dev.tsv", "text": "sentence", "label": "score"}
        splits = {"train": rows[:8], "validation": rows[8:]}
    elif kind == "multiple_choice":
        rows = [{"q": _sentence(rng), "options": [_sentence(rng, 3) for _ in range(3)], "answer": i % 3}
                for i in range(12)]
        spec = {"kind": kind, "train": "train.jsonl", "validation": "dev.jsonl", "text": "q", "choices": "options",
                "label": "answer"}
        splits = {"train": rows[:8], "validation": rows[8:]}
    elif kind == "token_classification":
        rows = []
        for _ in range(12):
            words = list(rng.choice(WORDS, 5))
            rows.append({"words": words, "bio": ["B-FN" if w == "function" else "I-FN" if w == "returns" else "O"
                                                  for w in words]})
        spec = {"kind": kind, "train": "train.jsonl", "validation": "dev.jsonl", "tokens": "words", "tags": "bio"}
        splits = {"train": rows[:8], "validation": rows[8:]}
    else:
        context = "the function returns a value when the object is called"
        squad = {"data": [{"paragraphs": [{"context": context, "qas": [
            {"id": f"q{i}", "question": _sentence(rng, 3),
             "answers": [{"text": "a value", "answer_start": context.index("a value")}]} for i in range(6)]}]}]}
        directory = tmp_path / "qa"
        directory.mkdir()
        for name in ("train.json", "dev.json"):
            (directory / name).write_text(json.dumps(squad))
        (directory / "task.json").write_text(json.dumps({"kind": kind, "train": "train.json", "validation": "dev.json"}))
        task = str(directory / "task.json")
    if kind != "extractive_qa":
        task = _task(tmp_path / kind, spec, splits)
    assert _train(task, tmp_path / "run") == 0
    capsys.readouterr()
    inputs = TaskFile.read(task).files["validation"]
    rows = _predictions(tmp_path / "run", inputs, tmp_path)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--task", task]) == 0
    evaluated = capsys.readouterr().out
    records = TaskFile.read(task).records("validation")
    assert len(rows) == len(records)
    if kind == "regression":
        import scipy.stats

        pearson = 100 * scipy.stats.pearsonr([r["label"] for r in records], [r["prediction"] for r in rows])[0]
        assert re.search(rf"pearson\s+{pearson:.2f}", evaluated), evaluated
    elif kind == "multiple_choice":
        accuracy = 100 * np.mean([row["choice"] == r["label"] for row, r in zip(rows, records)])
        assert all(row["prediction"] in r["choices"] for row, r in zip(rows, records))
        assert re.search(rf"accuracy\s+{accuracy:.2f}", evaluated), evaluated
    elif kind == "token_classification":
        from nervaluate import Evaluator

        golds = [json.loads(line)["bio"] for line in open(inputs)]
        assert [len(row["prediction"]) for row in rows] == [len(g) for g in golds]
        assert {t for row in rows for t in row["prediction"]} <= {"B-FN", "I-FN", "O"}
        f1 = 100 * Evaluator(golds, [row["prediction"] for row in rows], tags=["FN"],
                             loader="list").evaluate()["overall"]["strict"].f1
        assert re.search(rf"span_f1\s+{f1:.2f}", evaluated), evaluated
    else:
        assert all(row["prediction"] and row["prediction"] in context for row in rows)  # a span of the context
        exact = 100 * np.mean([row["prediction"] == "a value" for row in rows])
        assert re.search(rf"em\s+{exact:.2f}", evaluated), evaluated


def test_text_to_text_trains_an_encoder_decoder_and_scores_rouge(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = [{"source": _sentence(rng), "summary": _sentence(rng, 2)} for _ in range(12)]
    spec = {"kind": "text_to_text", "train": "train.jsonl", "validation": "dev.jsonl", "input": "source",
            "target": "summary"}
    task = _task(tmp_path / "t2t", spec, {"train": rows[:8], "validation": rows[8:]})
    assert _train(task, tmp_path / "run", "t5_tiny.py") == 0
    capsys.readouterr()
    predicted = _predictions(tmp_path / "run", str(tmp_path / "t2t" / "dev.jsonl"), tmp_path)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--task", task]) == 0
    evaluated = capsys.readouterr().out
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = 100 * np.mean([scorer.score(r["summary"], p["prediction"])["rougeL"].fmeasure
                           for r, p in zip(rows[8:], predicted)])
    assert all(isinstance(p["prediction"], str) for p in predicted)
    assert re.search(rf"rougeL\s+{rouge:.2f}", evaluated), evaluated


@pytest.mark.parametrize("problem,message", [
    ("missing_column", r"dev.jsonl: no column 'other'; its columns are label, text"),
    ("empty", r"data file '.*dev.jsonl' has no rows"),
    ("bad_line", r"dev.jsonl:3: not a JSON object"),
    ("unseen_label", r"dev.jsonl:2: label 'maybe' never occurs in the train file"),
    ("tags", r"train.jsonl:1: 3 tokens but 2 tags"),
    ("csv_fields", r"train.csv:3: the row has a different number of fields than the header"),
])
def test_bad_files_are_clear_errors_before_any_step(tmp_path, capsys, problem, message):
    task = _classification(tmp_path, ".csv" if problem == "csv_fields" else ".jsonl")
    dev = tmp_path / "cls" / "dev.jsonl"
    if problem == "missing_column":
        _write(dev, [{"text": "a", "label": "yes"}])
    elif problem == "empty":
        dev.write_text("\n")
    elif problem == "bad_line":
        dev.write_text(dev.read_text().splitlines(True)[0] * 2 + "{not json\n")
    elif problem == "unseen_label":
        _write(dev, [{"text": "a", "other": "b", "label": "yes"}, {"text": "a", "other": "b", "label": "maybe"}])
    elif problem == "tags":
        task = _task(tmp_path / "tags", {"kind": "token_classification", "train": "train.jsonl",
                                         "validation": "train.jsonl", "tokens": "w", "tags": "t"},
                     {"train": [{"w": ["a", "b", "c"], "t": ["O", "O"]}]})
    else:
        path = tmp_path / "cls" / "train.csv"
        path.write_text(path.read_text().splitlines(True)[0] + "a,b,yes\na,b,yes,extra\n")
    assert _train(task, tmp_path / "run") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_long_rows_are_counted_in_one_warning_and_head_tail_keeps_both_ends(tmp_path, caplog):
    long = " ".join(WORDS * 4)
    rows = [{"text": long, "label": "a"}, {"text": "short", "label": "b"}] * 4
    task = _task(tmp_path / "long", {"kind": "classification", "train": "train.jsonl", "validation": "train.jsonl",
                                     "text": "text", "label": "label", "truncation": "head_tail"}, {"train": rows})
    assert TaskFile.read(task).truncation == "head_tail"
    assert _train(task, tmp_path / "run") == 0
    assert "4 of 8 rows of" in caplog.text and "their head and tail kept" in caplog.text
    assert head_tail(list(range(100)), 8) == [0, 1, 94, 95, 96, 97, 98, 99]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1", "answers": []}]}]}]}))
    qa = _task(tmp_path / "qa", {"kind": "extractive_qa", "train": str(broken), "validation": str(broken)}, {})
    with pytest.raises(TaskFileError, match=r"broken.json: question 1 \(q1\) lacks 'question'"):
        TaskFile.read(qa).records("train")
    with pytest.raises(TaskFileError, match="'kind' must be one of"):
        TaskFile.read(_task(tmp_path / "bad", {"kind": "summarize", "train": "t.jsonl", "validation": "t.jsonl"},
                            {}))


def test_importing_squad_for_its_features_first_does_not_hide_the_other_benchmarks():
    import subprocess
    import sys

    code = ("import plmjax.data.squad; from plmjax.data import downstream; names = downstream.benchmarks(); "
            "print(sorted(downstream.SUITES), 'glue_rte' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["['glue',", "'superglue']", "True"]


def test_a_run_that_trains_only_its_head_is_scored_and_predicts_on_its_base(tmp_path, capsys):
    task = _classification(tmp_path)
    assert main(["train", "--config", os.path.join(ROOT, "configs", "bert_tiny.py"), "--workdir", str(tmp_path / "run"),
                 "--task", task, "--set", "train.trainable=classifier"] + QUICK) == 0
    trained = capsys.readouterr().out
    from plmjax.training.checkpoints import Checkpointer

    with Checkpointer(str(tmp_path / "run" / "checkpoints")) as checkpointer:
        stored = {p for p in checkpointer.shapes(2) if p.startswith("params/")}
    assert stored == {"params/classifier/bias", "params/classifier/kernel"}  # only what trains is stored
    rows = _predictions(tmp_path / "run", str(tmp_path / "cls" / "dev.jsonl"), tmp_path)
    golds = [str(json.loads(line)["label"]) for line in open(tmp_path / "cls" / "dev.jsonl")]
    accuracy = 100 * sklearn.metrics.accuracy_score(golds, [str(r["prediction"]) for r in rows])
    assert re.search(rf"accuracy\s+{accuracy:.2f}", trained), trained  # scored on its base, as predict is

