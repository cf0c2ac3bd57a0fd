"""Corpora, tokenizers and step-keyed batch sources, on real offline text (CPython's pydoc)."""

import dataclasses
import itertools
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from plmjax import config as configs
from plmjax.data.corpus import load_documents, split_sentences
from plmjax.data.pipeline import build_tokenizer, make_source, split_documents
from plmjax.data.tokenizer import Tokenizer
from plmjax.objectives.span_corruption import compute_input_and_target_lengths

VOCAB = 2000


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return load_documents("pydoc")


@pytest.fixture(scope="module")
def wordpiece(documents) -> Tokenizer:
    return Tokenizer.train(documents, "wordpiece", VOCAB)


@pytest.fixture(scope="module")
def bpe(documents) -> Tokenizer:
    return Tokenizer.train(documents, "bpe", VOCAB)


def _config(preset, *, corpus: str = "pydoc", vocab_size: int = VOCAB, **data) -> configs.Config:
    config = preset(vocab_size=vocab_size)
    defaults = dict(corpus=corpus, seq_length=64, batch_size=8)
    config.data = dataclasses.replace(config.data, **{**defaults, **data})
    return config


def _unmasked(batch: dict) -> np.ndarray:
    """input_ids with the original tokens put back at the masked positions."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_weights"])
    ids[rows, batch["masked_positions"][rows, slots]] = batch["masked_ids"][rows, slots]
    return ids


def _without_space(text: str) -> str:
    return re.sub(r"\s", "", text)


# ---------------------------------------------------------------------- corpus


def test_pydoc_corpus_is_79_documents_of_english_in_key_order(documents):
    from pydoc_data.topics import topics

    assert len(documents) == 79
    assert documents[0] == topics["assert"]  # alphabetically first key
    words = re.findall(r"[a-z]+", " ".join(documents).lower())
    assert len(words) > 50_000
    assert {"the", "statement", "expression", "value"} <= set(words)


def test_text_files_split_documents_on_blank_lines(tmp_path):
    (tmp_path / "b.txt").write_text("third doc\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text(
        "first doc\nstill first\n\n  \nsecond — doc\n", encoding="utf-8"
    )
    assert load_documents(f"text_files:{tmp_path}/*.txt") == [
        "first doc\nstill first",
        "second — doc",
        "third doc",
    ]


@pytest.mark.parametrize("spec", ["wikipedia", "text_files:", "text_files:/nonexistent/*.txt"])
def test_bad_corpus_spec_names_the_spec_and_the_accepted_forms(spec):
    with pytest.raises(ValueError, match=re.escape(repr(spec))) as error:
        load_documents(spec)
    assert "'pydoc'" in str(error.value) and "'text_files:GLOB'" in str(error.value)


def test_split_sentences_breaks_lines_and_full_stops():
    text = "First line.\nSecond. Third one.  \n\n   \nv1.2 stays whole\n"
    assert split_sentences(text) == ["First line.", "Second.", "Third one.", "v1.2 stays whole"]


# ---------------------------------------------------------------------- tokenizer


def test_wordpiece_round_trips_lowercased_text(documents, wordpiece):
    for document in documents:
        ids = wordpiece.encode(document)
        assert wordpiece.unk_id not in ids
        assert _without_space(wordpiece.decode(ids)) == _without_space(document.lower())


def test_bpe_round_trips_any_text_exactly(documents, bpe):
    for text in [*documents, "naïve café — 東京 🙂\n\ttabs"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_special_ids_follow_the_conventions(wordpiece, bpe):
    roles = ("pad", "unk", "cls", "sep", "mask")
    assert [getattr(wordpiece, f"{role}_id") for role in roles] == [0, 1, 2, 3, 4]
    assert wordpiece.eos_id == wordpiece.sep_id
    assert (bpe.pad_id, bpe.eos_id, bpe.unk_id, bpe.mask_id) == (0, 1, 2, None)
    assert bpe.special_ids == {0, 1, 2}
    assert wordpiece.vocab_size == bpe.vocab_size == VOCAB
    assert wordpiece.encode("The Statement") == wordpiece.encode("the statement")
    assert (
        wordpiece.decode([wordpiece.cls_id, *wordpiece.encode("hello"), wordpiece.sep_id, 0, 0])
        == "[CLS] hello [SEP]"
    )


def test_sentinels_take_the_top_ids_and_the_vocab_is_filled_exactly(documents):
    # pydoc saturates WordPiece at ~5.5k tokens, so most of this vocab is unused padding ids.
    tokenizer = Tokenizer.train(documents, "wordpiece", 8192, num_sentinels=100)
    assert tokenizer.vocab_size == 8192 and tokenizer.num_sentinels == 100
    assert tokenizer.sentinel_id(0) == 8191 and tokenizer.sentinel_id(99) == 8092
    assert tokenizer.hf.id_to_token(8191) == "<extra_id_0>"
    assert tokenizer.hf.id_to_token(8092) == "<extra_id_99>"
    assert tokenizer.decode([tokenizer.sentinel_id(3)]) == "<extra_id_3>"
    assert set(range(8092, 8192)) <= tokenizer.special_ids
    assert max(max(tokenizer.encode_batch(documents), key=max)) < 8092
    with pytest.raises(IndexError):
        tokenizer.sentinel_id(100)


def test_too_small_vocab_is_a_clear_error(documents):
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train(documents, "bpe", 200)


def test_training_is_deterministic_across_processes(documents, wordpiece, bpe, tmp_path):
    # `tokenizers` alone numbers WordPiece '##' tokens in a per-process hash order.
    assert Tokenizer.train(documents, "wordpiece", VOCAB).hf.to_str() == wordpiece.hf.to_str()
    script = textwrap.dedent(
        f"""
        from plmjax.data.corpus import load_documents
        from plmjax.data.tokenizer import Tokenizer
        for kind in ("wordpiece", "bpe"):
            tokenizer = Tokenizer.train(load_documents("pydoc"), kind, {VOCAB})
            tokenizer.save(r"{tmp_path}/" + kind + ".json")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    for kind, tokenizer in (("wordpiece", wordpiece), ("bpe", bpe)):
        assert Tokenizer.load(tmp_path / f"{kind}.json").hf.to_str() == tokenizer.hf.to_str()


def test_save_and_load_keep_ids_and_behaviour(documents, tmp_path):
    tokenizer = Tokenizer.train(documents, "bpe", VOCAB, num_sentinels=10)
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert (loaded.kind, loaded.vocab_size, loaded.num_sentinels) == ("bpe", VOCAB, 10)
    assert loaded.special_ids == tokenizer.special_ids
    assert loaded.sentinel_id(9) == VOCAB - 10
    assert loaded.encode(documents[5]) == tokenizer.encode(documents[5])


# ---------------------------------------------------------------------- pipeline


def test_build_tokenizer_trains_once_then_reuses_the_saved_file(tmp_path):
    config = _config(configs.t5)
    tokenizer = build_tokenizer(config, str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file()
    assert tokenizer.kind == "wordpiece" and tokenizer.vocab_size == VOCAB
    assert tokenizer.num_sentinels == 100
    assert build_tokenizer(config, str(tmp_path)).hf.to_str() == tokenizer.hf.to_str()
    config.data.vocab = str(tmp_path / "tokenizer.json")
    assert build_tokenizer(config, None).hf.to_str() == tokenizer.hf.to_str()
    tiny = build_tokenizer(_config(configs.t5, vocab_size=500), None)
    assert tiny.num_sentinels == 50
    assert build_tokenizer(_config(configs.gpt), None).kind == "bpe"


def test_batches_are_a_pure_function_of_seed_and_step(wordpiece):
    config = _config(configs.bert)
    source = make_source(config, wordpiece, "train")
    first, again = source.batch(7), source.batch(7)
    fresh = make_source(config, wordpiece, "train").batch(7)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], fresh[key])
    assert not np.array_equal(first["input_ids"], source.batch(8)["input_ids"])
    reseeded = make_source(_config(configs.bert, seed=1), wordpiece, "train").batch(7)
    assert not np.array_equal(first["input_ids"], reseeded["input_ids"])


def test_masks_are_drawn_afresh_each_time_an_example_comes_back(wordpiece):
    probe = make_source(_config(configs.bert), wordpiece, "eval")
    source = make_source(_config(configs.bert, batch_size=probe.num_examples), wordpiece, "eval")
    epochs = [source.batch(step) for step in (0, 1)]  # one whole epoch per step
    masks = [
        {
            row.tobytes(): tuple(positions)
            for row, positions in zip(_unmasked(batch), batch["masked_positions"], strict=True)
        }
        for batch in epochs
    ]
    assert masks[0].keys() == masks[1].keys()
    assert sum(masks[0][key] == masks[1][key] for key in masks[0]) < 0.1 * len(masks[0])


def test_each_epoch_visits_every_example_once_and_cycles_small_splits(bpe):
    config = _config(configs.gpt, batch_size=1)
    source = make_source(config, bpe, "eval")
    n = source.num_examples

    def epoch(e: int) -> list[bytes]:
        return [source.batch(s)["input_ids"][0].tobytes() for s in range(e * n, (e + 1) * n)]

    examples = sorted(row[:-1].tobytes() for row in source.examples["tokens"])
    assert sorted(epoch(0)) == sorted(epoch(1)) == examples
    assert epoch(0) != epoch(1)  # reshuffled each epoch
    big = make_source(_config(configs.gpt, batch_size=3 * n), bpe, "eval")
    assert big.batch(0)["input_ids"].shape == (3 * n, 64)


def test_nsp_pairs_are_laid_out_like_bert(wordpiece):
    source = make_source(_config(configs.bert, batch_size=512), wordpiece, "train")
    assert abs(source.examples["nsp_labels"].mean() - 0.5) < 0.05
    batch = source.batch(0)
    assert set(batch) == {
        "input_ids", "segment_ids", "attention_mask", "nsp_labels",
        "masked_positions", "masked_ids", "masked_weights",
    }  # fmt: skip
    assert batch["nsp_labels"].shape == (512,) and set(np.unique(batch["nsp_labels"])) == {0, 1}
    ids, segments, attention = _unmasked(batch), batch["segment_ids"], batch["attention_mask"]
    np.testing.assert_array_equal(attention, batch["input_ids"] != wordpiece.pad_id)
    assert np.all(ids[:, 0] == wordpiece.cls_id)
    for row_ids, row_segments, row_attention in zip(ids, segments, attention, strict=True):
        real = int(row_attention.sum())
        assert row_attention[:real].all() and not row_attention[real:].any()
        seps = np.flatnonzero(row_ids[:real] == wordpiece.sep_id)
        assert len(seps) == 2 and seps[1] == real - 1 and seps[0] > 1
        np.testing.assert_array_equal(row_segments[: seps[0] + 1], 0)
        np.testing.assert_array_equal(row_segments[seps[0] + 1 : real], 1)
        np.testing.assert_array_equal(row_segments[real:], 0)
    masked = batch["masked_weights"] > 0
    positions_hit = np.take_along_axis(batch["input_ids"], batch["masked_positions"], 1)[masked]
    assert np.mean(positions_hit == wordpiece.mask_id) > 0.7
    original = np.take_along_axis(ids, batch["masked_positions"], 1)[masked]
    assert not np.isin(original, list(wordpiece.special_ids)).any()


def test_single_segments_without_nsp(wordpiece):
    config = _config(configs.bert)
    config.objective.mlm.nsp = False
    batch = make_source(config, wordpiece, "train").batch(0)
    assert "nsp_labels" not in batch
    ids = _unmasked(batch)
    assert np.all(ids[:, 0] == wordpiece.cls_id)
    assert np.all((ids == wordpiece.sep_id).sum(1) == 1)
    assert not batch["segment_ids"].any()


FRUITS = (
    "apple banana cherry damson elder fig grape guava kiwi lemon "
    "lime mango melon olive papaya peach pear plum quince raisin"
).split()


@pytest.fixture(scope="module")
def fruit_corpus(tmp_path_factory) -> str:
    """Twenty documents, each naming only its own fruit, so a token reveals its document."""
    colours = itertools.cycle(["red", "green", "blue", "small", "large", "sweet", "sour"])
    path = tmp_path_factory.mktemp("fruit") / "fruit.txt"
    path.write_text(
        "\n\n".join(
            "\n".join(f"the {fruit} is {next(colours)}." for _ in range(60)) for fruit in FRUITS
        )
    )
    return f"text_files:{path}"


def test_nsp_partners_and_splits_come_from_the_right_documents(fruit_corpus):
    config = _config(
        configs.bert, corpus=fruit_corpus, vocab_size=300, seq_length=32, batch_size=256
    )
    tokenizer = build_tokenizer(config, None)
    fruit_of = {}
    for fruit in FRUITS:
        (token,) = tokenizer.encode(fruit)
        fruit_of[token] = fruit
    seen = {}
    for split in ("train", "eval"):
        batch = make_source(config, tokenizer, split).batch(0)
        seen[split] = set()
        for row, segments, label in zip(
            _unmasked(batch), batch["segment_ids"], batch["nsp_labels"], strict=True
        ):
            a = {fruit_of[t] for t in row[segments == 0] if t in fruit_of}
            b = {fruit_of[t] for t in row[segments == 1] if t in fruit_of}
            assert len(a) == 1 and len(b) == 1
            # eval holds a single document, so its random partners come from that same document
            assert (a == b) == (label == 0 or split == "eval")
            seen[split] |= a | b
    assert seen == {"train": set(FRUITS[:-1]), "eval": {"raisin"}}


def test_train_and_eval_documents_are_disjoint(documents):
    train, eval_ = (split_documents(documents, 0.05, split) for split in ("train", "eval"))
    assert len(eval_) == 4 and train + eval_ == documents
    with pytest.raises(ValueError, match="too few"):
        split_documents(documents[:1], 0.05, "train")


def test_span_corruption_features(wordpiece, documents):
    tokenizer = Tokenizer.train(documents, "wordpiece", VOCAB, num_sentinels=100)
    source = make_source(_config(configs.t5), tokenizer, "train")
    raw, targets = compute_input_and_target_lengths(64, 0.15, 3.0)
    assert source.examples["tokens"].shape[1] == raw
    batch = source.batch(0)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "encoder_input_ids": ((8, 64), np.int32),
        "decoder_input_ids": ((8, targets), np.int32),
        "decoder_target_ids": ((8, targets), np.int32),
        "decoder_weights": ((8, targets), np.float32),
    }
    assert np.all(batch["decoder_target_ids"][:, 0] == tokenizer.sentinel_id(0))
    assert np.all(batch["decoder_weights"].sum(1) == targets)
    assert np.all(batch["encoder_input_ids"][:, -1] == tokenizer.eos_id)  # filled exactly
    longer = make_source(_config(configs.t5, target_length=targets + 4), tokenizer, "train")
    assert longer.batch(0)["decoder_target_ids"].shape == (8, targets + 4)
    with pytest.raises(ValueError, match="target_length"):
        make_source(_config(configs.t5, target_length=targets - 1), tokenizer, "train")
    with pytest.raises(ValueError, match="sentinels"):
        make_source(_config(configs.t5), wordpiece, "train")


def test_causal_features(bpe):
    batch = make_source(_config(configs.gpt), bpe, "train").batch(3)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "input_ids": ((8, 64), np.int32),
        "target_ids": ((8, 64), np.int32),
        "weights": ((8, 64), np.float32),
    }
    np.testing.assert_array_equal(batch["target_ids"][:, :-1], batch["input_ids"][:, 1:])
    window = bpe.decode(np.concatenate([batch["input_ids"][0], batch["target_ids"][0, -1:]]))
    train_documents = split_documents(load_documents("pydoc"), 0.05, "train")
    assert len(window) > 100 and window in "".join(d + "<eos>" for d in train_documents)


def test_unsupported_setups_are_clear_errors(wordpiece, tmp_path):
    config = _config(configs.bert)
    config.objective.kind = "causal_lm"
    with pytest.raises(ValueError, match=r"encoder.*causal_lm.*supported: (.*, )?encoder\+mlm"):
        make_source(config, wordpiece, "train")
    with pytest.raises(ValueError, match=r"model\.vocab_size=1000"):
        make_source(_config(configs.bert, vocab_size=1000), wordpiece, "train")
    with pytest.raises(ValueError, match="'nowhere'"):
        make_source(_config(configs.bert, corpus="nowhere"), wordpiece, "train")
    (tmp_path / "tiny.txt").write_text("one short document\n\nand another\n\nand a third\n")
    tiny = _config(
        configs.gpt, corpus=f"text_files:{tmp_path}/tiny.txt", seq_length=512, eval_fraction=0.34
    )
    with pytest.raises(ValueError, match="no examples"):
        make_source(tiny, Tokenizer.train(load_documents(tiny.data.corpus), "bpe", 300), "train")
