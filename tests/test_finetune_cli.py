"""Fine-tuning and official evaluation through the `plmjax` command, on tfds mock data."""

import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from plmjax.cli import main
from plmjax.config import bert
from plmjax.convert import directory as checkpoint_dir
from plmjax.data import downstream, metrics
from plmjax.data.corpus import load_documents
from plmjax.data.tokenizer import Tokenizer
from plmjax.models.encoder import EncoderForPretraining, EncoderForSequenceClassification
from plmjax.training.checkpoints import CheckpointMismatchError
from plmjax.training.transfer import pretrained_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--no-progress", "--set", "train.num_steps=3", "--set", "train.log_every=1", "--set", "train.eval_steps=1",
         "--set", "mesh.data=1", "--set", "data.batch_size=8", "--set", "data.seq_length=32",
         "--set", "model.vocab_size=512"]
EVAL_RECORDS = 13  # not a multiple of the batch size: the last prediction batch is padded


def _accuracy_by_hand(workdir: str) -> float:
    """glue_rte accuracy of the run's checkpoint, from a plain forward pass over every eval record."""
    config = checkpoint_dir.read_config(workdir)
    tokenizer = Tokenizer.load(config.data.vocab)  # the pretrained model's, which init_from names
    task = downstream.benchmarks()["glue_rte"]
    records = downstream.load_records(task, "eval")
    rows = task.features.encode(records, tokenizer, config.data.seq_length).arrays
    module = EncoderForSequenceClassification(config.model)
    abstract = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), rows["input_ids"][:1])))
    params, _ = checkpoint_dir.restore_params(workdir, abstract["params"])
    logits = module.apply({"params": params}, rows["input_ids"], rows["segment_ids"], rows["attention_mask"])
    return metrics.accuracy([r["label"] for r in records], np.argmax(logits, -1).tolist())["accuracy"]


def _pretrained(directory: str, hidden_size: int = 32) -> dict:
    """A converted 'pretrained' encoder (random MLM + NSP model, WordPiece vocabulary); returns its params."""
    config = bert(vocab_size=512, hidden_size=hidden_size, num_layers=1, num_heads=2, mlp_dim=64)
    tokenizer = Tokenizer.train(load_documents("pydoc")[:40], kind="wordpiece", vocab_size=512)
    variables = EncoderForPretraining(config.model).init(jax.random.key(7), np.ones((1, 8), np.int32))
    params = nn.meta.unbox(variables)["params"]
    checkpoint_dir.save(directory, config, params, tokenizer)
    return params


def test_an_encoder_fine_tunes_glue_rte_from_a_pretrained_one_and_eval_writes_the_table(tmp_path, capsys):
    pretrained, workdir = str(tmp_path / "pretrained"), str(tmp_path / "rte")
    _pretrained(pretrained)
    with tfds.testing.mock_data(num_examples=EVAL_RECORDS):
        assert main(["train", "--init_from", pretrained, "--workdir", workdir, "--task", "glue_rte", *QUICK]) == 0
        trained = capsys.readouterr().out
        assert main(["eval", "--checkpoint", workdir, "--task", "glue_rte"]) == 0
        evaluated = capsys.readouterr().out
        expected = _accuracy_by_hand(workdir)
        assert main(["eval", "--checkpoint", workdir, "--task", "glue"]) == 2  # one run per task, in workdir/<task>
        refused = capsys.readouterr().err
    assert f"glue_cola on {workdir}: the checkpoint's head was fine-tuned on glue_rte, not for glue_cola" in refused
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["data"]["mixture"] == "glue_rte_features" and config["model"]["num_labels"] == 2
    assert "eval step 3: accuracy=" in trained and f"glue_rte  accuracy       {expected:8.2f}" in trained
    assert f"glue_rte  accuracy       {expected:8.2f}" in evaluated
    report = json.load(open(os.path.join(workdir, "eval_glue_rte.json")))
    assert report["tasks"] == {"glue_rte": {"accuracy": pytest.approx(expected)}} and report["score"] is None
    assert f"| glue_rte | accuracy | {expected:.2f} |" in open(os.path.join(workdir, "eval_glue_rte.md")).read()
    assert expected * EVAL_RECORDS / 100 == pytest.approx(round(expected * EVAL_RECORDS / 100))  # all 13 scored


def test_fine_tuning_takes_the_modules_it_shares_with_the_pretrained_model_and_a_fresh_head(tmp_path):
    stored = _pretrained(str(tmp_path / "pretrained"))
    module = EncoderForSequenceClassification(bert(vocab_size=512, hidden_size=32, num_layers=1, num_heads=2,
                                                   mlp_dim=64).model)
    fresh = nn.meta.unbox(module.init(jax.random.key(0), np.ones((1, 8), np.int32)))["params"]
    params, report = pretrained_params(str(tmp_path / "pretrained"), fresh)
    for name in ("encoder", "pooler"):
        jax.tree.map(np.testing.assert_array_equal, params[name], stored[name])
    jax.tree.map(np.testing.assert_array_equal, params["classifier"], fresh["classifier"])
    assert report.new == ["classifier/bias", "classifier/kernel"]
    assert set(report.dropped) == {"mlm_head/bias", "mlm_head/norm/bias", "mlm_head/norm/scale",
                                   "mlm_head/transform/bias", "mlm_head/transform/kernel", "nsp_head/bias",
                                   "nsp_head/kernel"}
    assert len(report.loaded) == len(jax.tree.leaves(fresh)) - 2
    assert "new, freshly initialised: 2 (classifier)" in report.text()
    _pretrained(str(tmp_path / "wider"), hidden_size=64)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped: encoder/"):
        pretrained_params(str(tmp_path / "wider"), fresh)


def test_a_t5_fine_tunes_on_the_glue_mixture_and_gets_the_glue_score(tmp_path, capsys):
    workdir = str(tmp_path / "glue")
    args = ["train", "--config", os.path.join(ROOT, "configs", "t5_tiny.py"), "--workdir", workdir, "--task", "glue",
            "--set", "data.target_length=8", "--set", "model.num_layers=1"]
    with tfds.testing.mock_data(num_examples=4):
        assert main(args + QUICK) == 0
    out = capsys.readouterr().out
    report = json.load(open(os.path.join(workdir, "eval_glue.json")))
    assert json.load(open(os.path.join(workdir, "config.json")))["data"]["mixture"] == "glue_t2t"
    assert list(report["tasks"]) == downstream.expand("glue")
    assert report["tasks"]["glue_stsb"].keys() == {"pearson", "spearman"}
    assert report["tasks"]["glue_mrpc"].keys() == {"f1", "accuracy"} and report["tasks"]["glue_cola"].keys() == {"mcc"}
    assert report["score"] == pytest.approx(metrics.glue_score(report["tasks"]))
    assert re.search(rf"glue score\s+{report['score']:.2f}\n", out)


@pytest.mark.parametrize("args, message", [
    (["--task", "glue_foo"], r"unknown seqio task or mixture 'glue_foo'; registered:(.|\n)*glue_rte_features"),
    (["--task", "glue"], "an encoder fine-tunes one glue task at a time"),
    (["--task", "glue_rte_t2t"], "'glue_rte_t2t' is in the t2t format"),
    (["--task", "superglue_axb"], "superglue_axb is evaluation-only .* fine-tune on superglue_rte"),
    (["--task", "squad_v1"], "squad_v1: malformed record 0 of tfds squad/v1.1 split 'train'"),
])
def test_bad_tasks_and_records_stop_training_with_a_clear_error(tmp_path, capsys, args, message):
    with tfds.testing.mock_data(num_examples=4):
        code = main(["train", "--config", os.path.join(ROOT, "configs", "bert_tiny.py"), "--workdir",
                     str(tmp_path), *args, *QUICK])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_eval_of_a_task_needs_a_run_directory(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path), "--task", "glue_rte"]) == 2
    assert "is not a plmjax run directory" in capsys.readouterr().err
