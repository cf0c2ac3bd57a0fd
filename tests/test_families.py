"""Encoder families on the one core: RoBERTa's recipe (FULL-SENTENCES rows, a RoBERTa-layout byte BPE), ALBERT's
(n-gram masking, sentence-order prediction) and ELECTRA's replaced-token detection; each preset trains, resumes
and fine-tunes through the `plmjax` command."""

from __future__ import annotations

import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from finetuning import fine_tune_glue_rte

from plmjax.cli import main
from plmjax.config import ConfigError, albert, apply_overrides, electra, roberta
from plmjax.convert import directory as checkpoint_dir
from plmjax.data import pipeline
from plmjax.data.corpus import load_documents, split_sentences
from plmjax.data.tokenizer import Tokenizer
from plmjax.models.task import make_model_task
from plmjax.objectives import ngram
from plmjax.objectives import replaced_token_detection as rtd
from plmjax.objectives.mlm import mask_tokens
from plmjax.training.metrics import read_metrics
from plmjax.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = load_documents("pydoc")[:40]
VOCAB = 800


@pytest.fixture(scope="module")
def wordpiece():
    return Tokenizer.train(DOCS, "wordpiece", VOCAB)


@pytest.fixture(scope="module")
def encoder_bpe():
    return Tokenizer.train(DOCS, "bpe", VOCAB, encoder=True)


def _sentences(tokenizer, document):
    return [ids for ids in tokenizer.encode_batch(split_sentences(document)) if ids]


# ---------------------------------------------------------------- RoBERTa


def test_an_encoder_byte_bpe_has_robertas_special_tokens(encoder_bpe, tmp_path):
    assert [encoder_bpe.hf.id_to_token(i) for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    encoder_bpe.save(tmp_path / "tokenizer.json")
    for tokenizer in (encoder_bpe, Tokenizer.load(tmp_path / "tokenizer.json")):
        assert tokenizer.kind == "bpe" and tokenizer.vocab_size == VOCAB
        assert (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id,
                tokenizer.eos_id) == (0, 1, 2, 3, 4, 2)
    text = "Byte-level BPE keeps text exactly: ünïcode, tabs\tand  spaces."
    assert encoder_bpe.decode(encoder_bpe.encode(text)) == text
    config = roberta(vocab_size=VOCAB)
    assert (config.model.pad_token_id, config.model.position_offset) == (1, 2)  # learned positions start at pad + 1
    assert (config.optimizer.b2, config.optimizer.eps, config.objective.mlm.nsp) == (0.98, 1e-6, False)


def test_full_sentences_rows_pack_whole_sentences_across_documents(encoder_bpe):
    config = roberta(vocab_size=VOCAB, max_length=66)
    config.data.seq_length = 64
    budget = 62
    ids = pipeline.single_rows(config, encoder_bpe, DOCS, full_sentences=True)["input_ids"]
    sep, pad = encoder_bpe.sep_id, encoder_bpe.pad_id
    contents = []
    for row in ids:
        real = row[row != pad].tolist()
        assert real[0] == encoder_bpe.cls_id and real[-1] == sep and len(real) <= 64
        contents.append(real[1:-1])
    # Every row is whole sentences in corpus order; a document boundary inside a row is one separator.
    units = [[*sentence[:budget]] for doc in DOCS for sentence in _sentences(encoder_bpe, doc)]
    starts = {0}
    for doc in DOCS:
        starts.add(max(starts) + len(_sentences(encoder_bpe, doc)))
    expected_rows, stream = [], iter(range(len(units)))
    index = next(stream)
    for content in contents:
        pieces, rest = [], content
        while rest:
            if pieces and index in starts:
                assert rest[0] == sep, "a separator between documents"
                rest = rest[1:]
            assert rest[: len(units[index])] == units[index], "rows hold whole sentences"
            pieces.append(index)
            rest = rest[len(units[index]):]
            index = next(stream, None)
        expected_rows.append(pieces)
        if index is not None:  # greedy: the next sentence would not have fitted
            assert len(content) + (index in starts) + len(units[index]) > budget
    assert index is None and sum(map(len, expected_rows)) == len(units)  # nothing dropped
    assert sum(len(c) for c in contents) / (budget * len(contents)) > 0.8
    assert any(sep in content for content in contents), "rows cross document boundaries"


# ---------------------------------------------------------------- ALBERT


def test_sop_swaps_exactly_half_of_each_batch_and_labels_the_order(wordpiece):
    config = albert(vocab_size=VOCAB, hidden_size=32, num_heads=2, num_layers=2, mlp_dim=64, max_length=64)
    config.data.seq_length, config.data.batch_size = 64, 10
    source = pipeline.make_source(config, wordpiece, "train")
    ex = source.examples
    streams = [list(itertools.chain(*_sentences(wordpiece, doc))) for doc in load_documents("pydoc")]
    swapped = 0
    for step in range(40):
        batch = source.batch(step)
        labels = batch["sop_labels"]
        assert labels.sum() == 5  # exactly half of the batch's pairs are swapped
        swapped += labels.sum()
        restored = batch["input_ids"].copy()
        for r in range(len(restored)):
            valid = batch["masked_weights"][r] > 0
            restored[r, batch["masked_positions"][r][valid]] = batch["masked_ids"][r][valid]
        for r, i in enumerate(source._indices(step)):
            first = ex["first"][i, : ex["first_length"][i]].tolist()
            second = ex["second"][i, : ex["second_length"][i]].tolist()
            a, b = (second, first) if labels[r] else (first, second)
            row = [wordpiece.cls_id, *a, wordpiece.sep_id, *b, wordpiece.sep_id]
            assert restored[r, : len(row)].tolist() == row and not restored[r, len(row):].any()
            assert batch["segment_ids"][r, : len(row)].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
            if step == 0:  # the two segments are consecutive text of one document (the longer one cut to fit)
                assert any(s[k: k + len(first)] == first and any(
                    s[j: j + len(second)] == second for j in range(k + len(first), k + len(first) + 400))
                    for s in streams for k in range(len(s)))
    assert swapped == 200  # of 400 pairs seen


def test_ngram_span_lengths_follow_one_over_n():
    rng = np.random.default_rng(0)
    words = [(i, i + 1) for i in range(300)]  # the first span is drawn whole (at most 3 tokens of the 3 budgeted)
    counts = np.bincount([ngram.choose_spans(words, 3, 3, rng)[0][1] for _ in range(6000)], minlength=4)[1:]
    np.testing.assert_allclose(counts / counts.sum(), [6 / 11, 3 / 11, 2 / 11], atol=0.015)
    for budget in (1, 5, 12, 40):  # multi-token words: spans never overlap, never exceed the budget
        words = [(2 * i, 2 * i + 1 + i % 2) for i in range(30)]
        spans = ngram.choose_spans(words, budget, 3, rng)
        covered = [w for first, count in spans for w in range(first, first + count)]
        assert len(covered) == len(set(covered))
        assert sum(words[w][1] - words[w][0] for w in covered) <= budget


def test_ngram_masking_predicts_whole_words(wordpiece):
    rows = [wordpiece.encode(s)[:62] for doc in DOCS[:4] for s in split_sentences(doc)]
    rows = [[wordpiece.cls_id, *r, wordpiece.sep_id] for r in rows if len(r) > 20][:40]
    ids = pipeline._pad_rows(rows, 64, wordpiece.pad_id)
    start = ~np.isin(ids, wordpiece.continuation_ids)
    masked = ngram.mask_ngrams(ids, start, np.random.default_rng(1), max_ngram=3, mask_rate=0.2,
                               max_predictions=16, mask_id=wordpiece.mask_id, vocab_size=VOCAB,
                               special_ids=wordpiece.special_ids)
    multiword = 0
    for b, row in enumerate(ids):
        chosen = set(masked["masked_positions"][b][masked["masked_weights"][b] > 0].tolist())
        real = int((row != wordpiece.pad_id).sum())
        assert 1 <= len(chosen) <= min(16, max(1, round(0.2 * (real - 2))))
        word_of = np.cumsum(start[b]) * (row != wordpiece.pad_id)
        for w in set(word_of[list(chosen)]):
            assert set(np.flatnonzero(word_of == w)) <= chosen, "a word is predicted whole or not at all"
        words_chosen = sorted(set(word_of[list(chosen)]))
        multiword += any(y == x + 1 for x, y in zip(words_chosen, words_chosen[1:]))
    assert multiword > 10  # spans of several words occur
    assert any(wordpiece.hf.id_to_token(int(i)).startswith("##") for i in masked["masked_ids"].ravel())


# ---------------------------------------------------------------- ELECTRA


SMALL = dict(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_length=32,
             dropout_rate=0.0, attention_dropout_rate=0.0)


@pytest.fixture(scope="module")
def rtd_model():
    """(model task, batch, params) of a small generator + discriminator."""
    config = electra(**SMALL)
    config.objective.replaced_token_detection.generator_hidden_size = 16
    config.objective.replaced_token_detection.generator_num_heads = 2
    task = make_model_task(config)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, SMALL["vocab_size"], (4, 20)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[3, 12:] = 2, 3, 0
    batch = mask_tokens(ids, rng, mask_rate=0.3, max_predictions=8, mask_id=4, vocab_size=SMALL["vocab_size"],
                        special_ids={0, 1, 2, 3, 4})
    batch = dict(batch, segment_ids=np.zeros_like(ids), attention_mask=(ids != 0).astype(np.int32))
    return task, batch, nn.meta.unbox(jax.jit(task.init)(jax.random.key(0), batch))["params"]


def test_electra_masks_85_percent_and_keeps_the_rest(wordpiece):
    config = electra(vocab_size=VOCAB)
    rows = pipeline.single_rows(config, wordpiece, DOCS)
    out = rtd.masking(wordpiece, config)(rows, np.random.default_rng(0))
    valid = out["masked_weights"] > 0
    at = np.take_along_axis(out["input_ids"], out["masked_positions"], axis=1)[valid]
    original = out["masked_ids"][valid]
    assert len(at) > 2000
    assert np.all((at == wordpiece.mask_id) | (at == original))  # no random tokens
    assert np.mean(at == wordpiece.mask_id) == pytest.approx(0.85, abs=0.02)


def test_replacements_come_from_the_generator_and_labels_mark_real_changes(rtd_model):
    task, batch, params = rtd_model
    valid = batch["masked_weights"] > 0
    forced = int(batch["masked_ids"][valid][0])  # one masked position's original token
    bias = np.full(SMALL["vocab_size"], -1e4, np.float32)
    bias[forced] = 1e4
    params = {**params, "generator_head": {**params["generator_head"], "bias": jnp.asarray(bias)}}
    outputs, _ = jax.jit(lambda p: task.forward({"params": p}, batch, deterministic=True,
                                                rngs=task.rngs(jax.random.key(3), True)))(params)
    corrupted, replaced = np.asarray(outputs["corrupted"]), np.asarray(outputs["replaced"])
    rows, slots = np.nonzero(valid)
    positions = batch["masked_positions"][rows, slots]
    assert np.all(corrupted[rows, positions] == forced)  # the generator's logits are forced to one token
    original = batch["input_ids"].copy()
    original[rows, positions] = batch["masked_ids"][rows, slots]
    unmasked = np.ones_like(original, bool)
    unmasked[rows, positions] = False
    assert np.array_equal(corrupted[unmasked], batch["input_ids"][unmasked])  # the rest are the inputs as given
    np.testing.assert_array_equal(replaced, (corrupted != original) & (batch["attention_mask"] > 0))
    assert not replaced[rows[0], positions[0]]  # the sample equal to the original is labelled original
    assert replaced.sum() == len(rows) - np.sum(batch["masked_ids"][valid] == forced) > 0
    # Position 0 predicted in a row whose unused slots also point at 0: the sample lands there, the slots write nothing.
    first = dict(batch, masked_positions=batch["masked_positions"].copy())
    first["masked_positions"][0, 0] = 0
    assert not valid[0].all() and valid[0, 0]
    outputs, _ = jax.jit(lambda p: task.forward({"params": p}, first, deterministic=True,
                                                rngs=task.rngs(jax.random.key(3), True)))(params)
    assert int(outputs["corrupted"][0, 0]) == forced


def test_the_discriminator_loss_does_not_train_the_generator_and_both_train_the_embeddings(rtd_model):
    task, batch, params = rtd_model
    names = ("generator_loss", "discriminator_loss", "loss")

    def terms(p):
        outputs, sown = task.forward({"params": p}, batch, deterministic=True, rngs=task.rngs(jax.random.key(5), True))
        metrics = task.loss_terms(outputs, sown, batch)
        return jnp.stack([metrics[name] for name in names])

    values, jacobian = jax.jit(lambda p: (terms(p), jax.jacrev(terms)(p)))(params)
    generator, discriminator = (jax.tree.map(lambda g: g[i], jacobian) for i in range(2))

    def norm(tree):
        return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

    assert norm(discriminator["generator"]) == 0 and norm(discriminator["generator_head"]) == 0
    assert norm(generator["encoder"]["stack"]) == 0 and norm(generator["discriminator_head"]) == 0
    for grads in (discriminator, generator):
        assert norm(grads["encoder"]["embedder"]["token"]) > 0  # the shared table learns from both
    assert float(values[2]) == pytest.approx(float(values[0] + 50.0 * values[1]), rel=1e-6)


@pytest.mark.parametrize("override, key", [
    ("objective.replaced_token_detection.generator_hidden_size=64", "generator_hidden_size=64"),
    ("objective.replaced_token_detection.discriminator_weight=0", "discriminator_weight=0"),
    ("objective.replaced_token_detection.generator_num_heads=3", "generator_num_heads=3"),
    ("objective.replaced_token_detection.generator_num_layers=-1", "generator_num_layers=-1"),
    ("model.shared_layer_groups=3", "model.shared_layer_groups=3"),
    ("objective.sop.ngram=-1", "objective.sop.ngram=-1"),
])
def test_bad_family_settings_are_config_errors_naming_the_key(override, key):
    config = electra(**SMALL) if "sop" not in override else albert(**SMALL)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(config, [override, "model.num_layers=2"] if "shared" in override else [override])


# ---------------------------------------------------------------- the presets, through the command


QUICK = ["train.log_every=1", "train.eval_every=0", "train.eval_steps=1", "train.checkpoint_every=0", "mesh.data=1",
         "optimizer.warmup_steps=2", "model.vocab_size=600", "model.hidden_size=32", "model.mlp_dim=64",
         "data.batch_size=8", "data.seq_length=48", "model.max_length=48", "train.num_steps=16"]
SHAPES = {"roberta_tiny": ["model.max_length=50"],
          "albert_tiny": ["model.embedding_size=16", "optimizer.learning_rate=2e-2"],  # LAMB: a relative step size
          "deberta_tiny": ["model.position_buckets=16"],
          "deberta_v3_xsmall": ["model.num_layers=2", "model.num_heads=2", "model.position_buckets=16",
                                "objective.replaced_token_detection.generator_hidden_size=32",
                                "objective.replaced_token_detection.generator_num_heads=2",
                                "optimizer.learning_rate=1e-3"]}
# What each run's fine-tuned model keeps of its family.
FAMILY_FIELDS = {"roberta_tiny": {"pad_token_id": 1, "position_offset": 2},
                 "albert_tiny": {"shared_layer_groups": 1, "embedding_size": 16},
                 "deberta_tiny": {"attention_kind": "disentangled", "mask_decoder_passes": 2, "position_input": False},
                 "deberta_v3_xsmall": {"attention_kind": "disentangled", "position_kind": "none", "type_vocab_size": 0}}


def _losses(workdir):
    return [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]


def _loss_falls(workdir):
    losses = [loss for _, loss in _losses(workdir)]
    assert len(losses) == 16 and np.mean(losses[-4:]) < np.mean(losses[:4])


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_roberta_albert_and_deberta_pretrain_and_fine_tune_glue_rte_from_their_runs(preset, tmp_path):
    run = str(tmp_path / "run")
    overrides = [a for o in QUICK + SHAPES[preset] for a in ("--set", o)]
    assert main(["train", "--config", os.path.join(ROOT, "configs", f"{preset}.py"), "--workdir", run,
                 "--no-progress", *overrides]) == 0
    _loss_falls(run)
    config = fine_tune_glue_rte(run, str(tmp_path / "rte"))
    assert config["model"]["hidden_size"] == 32 and config["data"]["mixture"] == "glue_rte_features"
    assert {k: config["model"][k] for k in FAMILY_FIELDS[preset]} == FAMILY_FIELDS[preset]
    if preset == "deberta_v3_xsmall":  # the discriminator fine-tunes from its tables plus its GDES deltas
        params, _ = checkpoint_dir.restore_task_params(run, checkpoint_dir.read_config(run))
        embedder = params["encoder"]["embedder"]
        np.testing.assert_array_equal(checkpoint_dir.load(run).params["encoder"]["embedder"]["token"]["embedding"],
                                      embedder["token"]["embedding"] + embedder["token_delta"])
        assert np.abs(embedder["token_delta"]).max() > 0


def test_electra_pretrains_resumes_exactly_and_its_discriminator_fine_tunes(electra_run, tmp_path):
    _loss_falls(electra_run)
    record = read_metrics(electra_run)[-2]
    assert {"generator_accuracy", "discriminator_accuracy", "replaced_precision", "replaced_recall"} <= set(record)
    resumed, config = str(tmp_path / "resumed"), checkpoint_dir.read_config(electra_run)
    for steps in (8, None):  # half the steps, then the rest in a new trainer
        trainer = Trainer(config, resumed, progress=False)
        trainer.run(num_steps=steps)
        trainer.close()
    assert _losses(resumed) == _losses(electra_run)
    tuned = fine_tune_glue_rte(electra_run, str(tmp_path / "rte"))
    assert tuned["model"]["embedding_size"] == 24
