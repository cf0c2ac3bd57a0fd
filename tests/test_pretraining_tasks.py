"""seqio pretraining tasks and mixtures: names, batches, packing, shards, resume, errors, lazy TensorFlow.

C4 is read through `tfds.testing.mock_data` (random text with C4's real features, fully offline).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from plmjax import cli
from plmjax.config import bert, gpt, t5, to_dict
from plmjax.data import registry, sources, vocabularies
from plmjax.data.corpus import load_documents
from plmjax.data.pipeline import split_documents
from plmjax.data.pretraining_tasks import LOCAL_EVAL_FRACTION
from plmjax.models.task import make_model_task
from plmjax.objectives.span_corruption import compute_input_and_target_lengths
from plmjax.training.metrics import read_metrics
from plmjax.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, LENGTH, BATCH = 2000, 32, 4
OBJECTIVES = ("span_corruption", "mlm", "lm")
KINDS = {"span_corruption": "sentencepiece", "mlm": "wordpiece", "lm": "bpe"}


@pytest.fixture(scope="module")
def vocabs(tmp_path_factory):
    """One vocabulary per objective: SentencePiece (T5), WordPiece (BERT), byte BPE (GPT-2)."""
    out, documents = tmp_path_factory.mktemp("vocabs"), load_documents("pydoc")
    return {
        objective: vocabularies.load_vocabulary(vocabularies.train_vocabulary(
            kind, documents, VOCAB, str(out / kind), num_sentinels=100 if kind == "sentencepiece" else 0))
        for objective, kind in KINDS.items()
    }


@pytest.fixture
def mock_c4():
    with tfds.testing.mock_data(num_examples=40):
        yield


def tiny_config(objective: str, mixture: str, **data):
    family = {"span_corruption": t5, "mlm": bert, "lm": gpt}[objective]
    config = family(vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64, max_length=64)
    config.data.mixture, config.data.seq_length, config.data.batch_size = mixture, LENGTH, BATCH
    for key, value in data.items():
        setattr(config.data, key, value)
    config.objective.mlm.nsp = False
    config.mesh.data = 1
    return config


def source(objective, mixture, vocabs, split="train", **data):
    return sources.make_source(tiny_config(objective, mixture, **data), vocabs[objective], split)


def windows(name, vocab, length, split="train", **kwargs):
    """The packed `targets` windows a task yields, in order (one epoch, unshuffled)."""
    provider = registry.resolve(name, vocab).provider
    dataset = provider.get_dataset({"targets": length}, split, shuffle=False, try_in_mem_cache=False, **kwargs)
    return [example["targets"] for example in dataset.as_numpy_iterator()]


def write_documents(directory, texts) -> str:
    directory.mkdir(exist_ok=True)
    (directory / "corpus.txt").write_text("\n\n".join(texts), encoding="utf-8")
    return str(directory / "*.txt")


# ---------------------------------------------------------------------- names


def test_plmjax_tasks_prints_every_registered_name(capsys):
    assert cli.main(["tasks"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == registry.names()
    for objective in OBJECTIVES:
        assert {f"c4_{objective}", f"c4_{objective}:CONFIG", f"pydoc_{objective}", f"text_files_{objective}:GLOB",
                f"c4_pydoc_{objective}"} <= set(printed)


def test_an_unknown_name_is_an_error_listing_the_registered_ones(vocabs):
    for name in ("c4_nope", "text_files_lm"):  # the family needs its ':GLOB'
        with pytest.raises(ValueError, match=f"unknown seqio task or mixture '{name}'") as error:
            source("lm", name, vocabs)
        assert "\n  c4_span_corruption\n" in str(error.value) and "text_files_lm:GLOB" in str(error.value)


# ---------------------------------------------------------------------- batches


def expected_shapes(objective: str, config) -> dict[str, tuple[int, ...]]:
    if objective == "span_corruption":
        targets = compute_input_and_target_lengths(LENGTH, 0.15, 3.0)[1]
        return {"encoder_input_ids": (BATCH, LENGTH), **{k: (BATCH, targets) for k in
                ("decoder_input_ids", "decoder_target_ids", "decoder_weights")}}
    if objective == "mlm":
        predictions = config.objective.mlm.max_predictions
        return {**{k: (BATCH, LENGTH) for k in ("input_ids", "segment_ids", "attention_mask")},
                **{k: (BATCH, predictions) for k in ("masked_positions", "masked_ids", "masked_weights")}}
    return {k: (BATCH, LENGTH) for k in ("input_ids", "target_ids", "weights")}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("corpus", ["c4_{}", "c4_{}:realnewslike", "pydoc_{}", "text_files_{}:FILES", "c4_pydoc_{}"])
def test_every_task_and_mixture_yields_model_ready_batches(vocabs, mock_c4, tmp_path, objective, corpus):
    name = corpus.format(objective).replace("FILES", write_documents(tmp_path, load_documents("pydoc")[:20]))
    config = tiny_config(objective, name)
    batch = sources.make_source(config, vocabs[objective], "train").batch(0)
    assert {k: v.shape for k, v in batch.items()} == expected_shapes(objective, config)
    make_model_task(config).validate(batch)  # ids inside the model's vocabulary, every feature the model reads
    assert sources.make_source(config, vocabs[objective], "eval").batch(1).keys() == batch.keys()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_windows_are_the_documents_tokenized_and_packed(vocabs, tmp_path, objective):
    """Concat-and-split: each document's tokens then EOS, cut into full windows; only the tail is dropped."""
    vocab, glob = vocabs[objective], write_documents(tmp_path, load_documents("pydoc")[:6])
    length = {"span_corruption": 40, "mlm": LENGTH, "lm": LENGTH + 1}[objective]
    rows = windows(f"text_files_{objective}:{glob}", vocab, length)
    train = split_documents(load_documents(f"text_files:{glob}"), LOCAL_EVAL_FRACTION, "train")
    stream = [i for text in train for i in [*vocab.encode(text), vocab.eos_id]]
    assert all(len(row) == length for row in rows)
    if objective == "mlm":
        assert all(row[0] == vocab.cls_id and row[-1] == vocab.sep_id for row in rows)
        rows = [row[1:-1] for row in rows]
    packed = np.concatenate(rows).tolist()
    assert packed == stream[: len(packed)] and len(stream) - len(packed) < len(rows[0])


def test_c4_text_is_tokenized_in_tfds_order(vocabs, mock_c4):
    vocab = vocabs["lm"]
    texts = [ex["text"].decode() for ex in tfds.as_numpy(tfds.load("c4/en:3.1.0", split="validation"))]
    packed = np.concatenate(windows("c4_lm", vocab, 9, split="validation")).tolist()
    stream = [i for text in texts for i in [*vocab.encode(text), vocab.eos_id]]
    assert len(packed) > 100 and packed == stream[: len(packed)]


def test_span_corruption_packs_full_inputs_that_restore_the_window(vocabs):
    """Every encoder row is a full window (no padding, EOS last); inputs + targets give the window back."""
    vocab = vocabs["span_corruption"]
    src = source("span_corruption", "pydoc_span_corruption", vocabs, split="eval")
    raw = windows("pydoc_span_corruption", vocab, src.batcher.sequence_length["targets"], split="validation")
    batch = src.batch(0)
    inputs, targets = batch["encoder_input_ids"], batch["decoder_target_ids"]
    assert (inputs != vocab.pad_id).all() and (inputs[:, -1] == vocab.eos_id).all()
    for row, (inp, tgt) in enumerate(zip(inputs, targets)):
        spans = re.split(r"(?=S)", "".join("S" if t in vocab.special_ids else "t" for t in tgt))  # sentinel-led spans
        offsets = np.cumsum([0] + [len(s) for s in spans])
        span_of = {tgt[start]: tgt[start + 1:end] for start, end in zip(offsets[:-1], offsets[1:]) if end > start}
        restored = [t for token in inp[:-1] for t in (span_of[token] if token in span_of else [token])]
        np.testing.assert_array_equal(restored, raw[row])


def test_mixture_samples_its_tasks_at_their_rates(vocabs, mock_c4):
    """c4_pydoc_lm mixes 90% C4 (mock text: letters a-j) and 10% Python reference windows."""
    vocab, src = vocabs["lm"], source("lm", "c4_pydoc_lm", vocabs, batch_size=20)
    rows = np.concatenate([src.batch(step)["input_ids"] for step in range(10)])
    texts = [vocab.decode([t for t in row if t not in vocab.special_ids]) for row in rows]
    from_pydoc = sum(bool(re.search(r"[k-zA-Z]", text)) for text in texts)
    assert 5 <= from_pydoc <= 45  # of 200 rows, ~20 expected


# ---------------------------------------------------------------------- order, shards, resume


def test_batches_are_a_pure_function_of_the_step(vocabs, mock_c4):
    first = source("mlm", "c4_pydoc_mlm", vocabs)
    sequential = [first.batch(step) for step in range(6)]
    for step in (4, 1, 5):  # jumping back and forth, and a fresh source, give the same batches
        for other in (first, source("mlm", "c4_pydoc_mlm", vocabs)):
            for key, value in other.batch(step).items():
                np.testing.assert_array_equal(value, sequential[step][key])
    assert not np.array_equal(sequential[0]["input_ids"], sequential[1]["input_ids"])


def test_masks_are_fresh_each_time_a_window_comes_back(vocabs, tmp_path):
    """A validation split of one window (29 one-token words + [SEP]): every step reads it again."""
    vocab = vocabs["mlm"]
    words = [w for w, i in sorted(vocab.tokenizer.hf.get_vocab().items(), key=lambda x: x[1]) if w.isalpha()][300:]
    texts = [" ".join(words[29 * d: 29 * (d + 1)]) for d in range(6)]
    assert all(len(vocab.encode(text)) == LENGTH - 3 for text in texts)
    glob = write_documents(tmp_path, texts)
    assert len(windows(f"text_files_mlm:{glob}", vocab, LENGTH, split="validation")) == 1
    src = source("mlm", f"text_files_mlm:{glob}", vocabs, split="eval", batch_size=1)
    first, again = src.batch(0), src.batch(1)

    def original(batch):
        ids = batch["input_ids"].copy()
        np.put_along_axis(ids, batch["masked_positions"], batch["masked_ids"], axis=1)
        return ids

    np.testing.assert_array_equal(original(first), original(again))
    assert not np.array_equal(first["masked_positions"], again["masked_positions"])


def test_two_processes_read_disjoint_shards_that_cover_the_data(vocabs, tmp_path):
    texts = [f"document{i:02d} " + " ".join(["words of text"] * 8) for i in range(12)]  # 11 train documents
    name, vocab = f"text_files_lm:{write_documents(tmp_path, texts)}", vocabs["lm"]
    seen = []
    for index in range(2):
        rows = windows(name, vocab, 8, shard_info=seqio.ShardInfo(index, 2))
        seen.append(set(re.findall(r"document\d\d", vocab.tokenizer.decode(np.concatenate(rows)))))  # past EOS
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"document{i:02d}" for i in range(11)}
    config = tiny_config("lm", name)
    provider, batcher = registry.resolve(name, vocab)
    from plmjax.data.seqio_source import SeqioSource

    half = SeqioSource(name, provider, batcher(config, vocab), split="train", batch_size=BATCH, seed=0,
                       shard=seqio.ShardInfo(1, 2))
    assert half.batch(0)["input_ids"].shape == (BATCH // 2, LENGTH)  # each process reads its share of a step


RESUME = textwrap.dedent("""
    import json, sys
    import tensorflow_datasets as tfds
    from plmjax.config import from_dict
    from plmjax.training.trainer import Trainer
    with tfds.testing.mock_data(num_examples=40):
        trainer = Trainer(from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
        trainer.run()
        trainer.close()
""")


def test_resume_with_a_seqio_mixture_equals_uninterrupted(vocabs, mock_c4, tmp_path):
    """A run stopped at step 3 resumes in a fresh process and matches the uninterrupted run step for step.

    The fresh process matters: shuffling and mixture sampling must be seeded, not process state.
    """
    config = tiny_config("lm", "c4_pydoc_lm")
    config.train.num_steps, config.train.log_every, config.train.eval_steps = 6, 1, 2
    config.train.checkpoint_every, config.train.keep_checkpoints = 3, 2
    config.model.dropout_rate = 0.1
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    trainer = Trainer(config, str(straight), progress=False)
    trainer.run()
    trainer.close()
    resumed.mkdir()  # the stopped run: its step-3 checkpoint and tokenizer, nothing else
    shutil.copytree(straight / "checkpoints" / "3", resumed / "checkpoints" / "3")
    shutil.copy(straight / "tokenizer.json", resumed)
    subprocess.run([sys.executable, "-c", RESUME, json.dumps(to_dict(config)), str(resumed)], check=True, cwd=ROOT)
    records = {wd: read_metrics(str(wd)) for wd in (straight, resumed)}
    losses = {wd: [(r["step"], r["loss"]) for r in recs if "loss" in r] for wd, recs in records.items()}
    assert losses[resumed] == losses[straight][3:] and [s for s, _ in losses[resumed]] == [4, 5, 6]
    assert records[resumed][-1] == records[straight][-1]  # the final evaluation: same parameters


TWO_PROCESSES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    from plmjax.config import from_dict
    from plmjax.data import sources, vocabularies
    source = sources.make_source(from_dict(json.loads(sys.argv[3])), vocabularies.load_vocabulary(sys.argv[4]), "train")
    np.savez(sys.argv[5], *[source.batch(step)["input_ids"] for step in range(2)])
""")


def test_two_real_processes_read_their_shards_into_one_global_batch(vocabs, tmp_path):
    """jax.distributed on CPU: each process reads its shard, and both get the same gathered global batch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    config = tiny_config("lm", "pydoc_lm")
    vocabs["lm"].tokenizer.save(tmp_path / "tokenizer.json")
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, address, str(i), json.dumps(to_dict(config)),
                               str(tmp_path / "tokenizer.json"), str(tmp_path / f"p{i}.npz")], cwd=ROOT)
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    got = [np.load(tmp_path / f"p{i}.npz") for i in range(2)]
    provider, batcher = registry.resolve("pydoc_lm", vocabs["lm"])
    from plmjax.data.seqio_source import SeqioSource

    shards = [SeqioSource("pydoc_lm", provider, batcher(config, vocabs["lm"]), split="train", batch_size=BATCH,
                          seed=0, shard=seqio.ShardInfo(i, 2)) for i in range(2)]
    for step in range(2):
        expected = np.concatenate([shard.batch(step)["input_ids"] for shard in shards])  # process order
        for process in got:
            np.testing.assert_array_equal(process[f"arr_{step}"], expected)


# ---------------------------------------------------------------------- errors and imports


def test_objective_and_task_must_agree(vocabs):
    with pytest.raises(ValueError, match="trains objective.kind='mlm', but the config says 'span_corruption'"):
        sources.make_source(tiny_config("span_corruption", "pydoc_mlm"), vocabs["mlm"], "train")
    config = tiny_config("mlm", "pydoc_mlm")
    config.objective.mlm.nsp = True
    with pytest.raises(ValueError, match="set objective.mlm.nsp=false"):
        sources.make_source(config, vocabs["mlm"], "train")
    with pytest.raises(ValueError, match=r"pydoc_mlm needs \[CLS\], \[SEP\] and \[MASK\]"):
        registry.resolve("pydoc_mlm", vocabs["lm"])


def _register_records(name: str, records: list[dict]) -> None:
    def dataset_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in records] for k in records[0]})

    from plmjax.data import pretraining_tasks
    from plmjax.objectives import builtin

    registry.register_task(name, lambda task_name, vocab: pretraining_tasks.seqio_task(
        task_name, vocab, seqio.FunctionDataSource(dataset_fn, splits=("train", "validation")), "causal_lm"),
        builtin.causal_lm_batcher)


def test_a_malformed_record_is_a_clear_error_not_a_skip(vocabs):
    good = "plain text " * 20
    _register_records("test_bad_utf8_lm", [{"text": good}, {"text": b"caf\xe9 latin-1 bytes"}, {"text": good}])
    with pytest.raises(ValueError, match=r"malformed record in seqio task/mixture 'test_bad_utf8_lm' \(train split, "
                                         r"step 0\): .*UTF-8"):
        source("lm", "test_bad_utf8_lm", vocabs).batch(0)
    _register_records("test_no_text_lm", [{"body": good}])
    with pytest.raises(ValueError, match="need a string feature 'text'; these records have .*'body'"):
        source("lm", "test_no_text_lm", vocabs)


def test_plain_imports_and_the_corpus_pipeline_do_not_load_tensorflow():
    script = textwrap.dedent("""
        import sys
        import plmjax, plmjax.models, plmjax.training.trainer, plmjax.cli
        from plmjax.config import bert
        from plmjax.data import sources
        plmjax.cli.build_parser()
        config = bert(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, max_length=64)
        config.data.seq_length = 32
        sources.make_source(config, sources.build_vocabulary(config), "eval").batch(0)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio", "tensorflow_datasets"))
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)
