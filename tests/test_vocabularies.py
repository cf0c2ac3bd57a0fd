"""seqio vocabularies: round trips (Python and TF), special ids, sentinels, word ids, `plmjax vocab train`."""

import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from plmjax import cli
from plmjax.data import vocabularies
from plmjax.data.corpus import load_documents

SIZE = 2000
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A for statement iterates over the items of any sequence, in order (see section 8.3).",
    "Unbelievably, Pythonic decorators wrap functions: f = decorator(f)",
]
# name -> train_vocabulary arguments
SPECS = {
    "wordpiece": dict(kind="wordpiece", num_sentinels=100),
    "wordpiece_cased": dict(kind="wordpiece", lowercase=False),
    "bpe": dict(kind="bpe"),
    "sentencepiece": dict(kind="sentencepiece", num_sentinels=100),
}


@pytest.fixture(scope="module")
def documents():
    return load_documents("pydoc")


@pytest.fixture(scope="module")
def vocabs(documents, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocabs")
    return {
        name: vocabularies.load_vocabulary(
            vocabularies.train_vocabulary(documents=documents, vocab_size=SIZE, out_dir=str(out / name), **spec)
        )
        for name, spec in SPECS.items()
    }


def _squeeze(text: str) -> str:
    """WordPiece decoding spaces out punctuation; compare text without whitespace."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("name", SPECS)
def test_every_vocabulary_round_trips_text_in_python_and_tf(vocabs, name):
    vocab = vocabs[name]
    for text in TEXTS:
        ids = vocab.encode(text)
        decoded = vocab.decode(ids)
        if name == "wordpiece":
            assert _squeeze(decoded) == _squeeze(text.lower())
        elif name == "wordpiece_cased":
            assert _squeeze(decoded) == _squeeze(text)
        else:  # byte BPE and SentencePiece give the text back exactly
            assert decoded == text
        np.testing.assert_array_equal(vocab.encode_tf(tf.constant(text)).numpy(), ids)
        assert vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == decoded
    ragged = vocab.encode_tf(tf.constant(TEXTS))
    assert ragged.to_list() == [list(vocab.encode(t)) for t in TEXTS]


def test_special_ids_follow_each_family(vocabs):
    for name in ("wordpiece", "wordpiece_cased"):
        wp = vocabs[name]
        roles = ("pad", "cls", "sep", "mask", "unk")
        names = {role: wp.tokenizer.hf.id_to_token(getattr(wp, f"{role}_id")) for role in roles}
        assert names == {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", "unk": "[UNK]"}
        assert wp.pad_id == 0 and wp.eos_id == wp.sep_id
    bpe = vocabs["bpe"]
    assert (bpe.pad_id, bpe.tokenizer.hf.id_to_token(bpe.eos_id)) == (0, "<eos>")
    assert bpe.cls_id is bpe.sep_id is bpe.mask_id is None
    sp = vocabs["sentencepiece"]
    assert (sp.pad_id, sp.eos_id, sp.unk_id) == (0, 1, 2)  # T5's layout
    assert sp.cls_id is sp.sep_id is sp.mask_id is None
    for vocab in vocabs.values():
        assert {vocab.pad_id, vocab.eos_id, vocab.unk_id} <= vocab.special_ids
        assert not set(vocab.encode(TEXTS[0])) & vocab.special_ids  # ordinary text uses no special id


@pytest.mark.parametrize("name", ["wordpiece", "sentencepiece"])
def test_sentinels_take_the_top_ids_and_decode_by_name(vocabs, name):
    vocab = vocabs[name]
    assert vocab.vocab_size == SIZE and vocab.num_sentinels == 100
    for k in (0, 1, 99):
        assert vocab.sentinel_id(k) == SIZE - 1 - k
        assert vocab.sentinel_id(k) in vocab.special_ids
        assert vocab.decode([vocab.sentinel_id(k)]).strip() == f"<extra_id_{k}>"
    with pytest.raises(IndexError, match="sentinel 100 out of range"):
        vocab.sentinel_id(100)
    assert max(vocab.encode(" ".join(TEXTS))) < vocab.sentinel_id(99)  # text never produces a sentinel


def test_wordpiece_word_ids_group_the_pieces_of_each_word(vocabs):
    vocab = vocabs["wordpiece"]
    text = "unbelievably pythonic decorators!"
    ids, words = vocab.encode(text), vocab.word_ids(text)
    pieces = [vocab.tokenizer.hf.id_to_token(i) for i in ids]
    assert len(words) == len(ids) and words == sorted(words)
    assert len(set(words)) == 4  # three words and the '!'
    assert len(ids) > 4  # some word was split into pieces ...
    for previous, piece, word in zip(words, pieces[1:], words[1:]):
        assert (word == previous) == piece.startswith("##")  # ... and its '##' pieces share its word id


def test_a_bare_sentencepiece_model_gets_t5s_sentinels(documents, tmp_path):
    path = vocabularies.train_vocabulary("sentencepiece", documents, 500, str(tmp_path))
    vocab = vocabularies.load_vocabulary(path)
    assert (vocab.num_sentinels, vocab.vocab_size) == (100, 600)
    assert vocab.decode([vocab.sentinel_id(0)]).strip() == "<extra_id_0>"


def test_equal_files_make_equal_vocabularies(vocabs, tmp_path):
    vocab = vocabs["bpe"]
    vocab.tokenizer.save(tmp_path / "tokenizer.json")
    assert vocabularies.load_vocabulary(str(tmp_path)) == vocab
    assert vocab != vocabs["wordpiece"]


def test_bad_vocabulary_paths_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist; train one with `plmjax vocab train`"):
        vocabularies.load_vocabulary(str(tmp_path / "missing.model"))
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(ValueError, match="neither a tokenizer.json nor a SentencePiece .model"):
        vocabularies.load_vocabulary(str(tmp_path / "vocab.txt"))
    with pytest.raises(ValueError, match="must hold exactly one of"):
        vocabularies.load_vocabulary(str(tmp_path))


@pytest.mark.parametrize("kind, file, sentinels", [("wordpiece", "tokenizer.json", 0), ("bpe", "tokenizer.json", 0),
                                                   ("sentencepiece", "spm.model", 100)])
def test_cli_vocab_train_writes_a_loadable_vocabulary(documents, tmp_path, capsys, kind, file, sentinels):
    for i, half in enumerate((documents[:40], documents[40:])):
        (tmp_path / f"part{i}.txt").write_text("\n\n".join(half), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["vocab", "train", "--kind", kind, "--corpus", str(tmp_path / "part0.txt"), str(tmp_path / "part1*"),
            "--size", "600", "--out", str(out)]
    assert cli.main(argv) == 0
    vocab = vocabularies.load_vocabulary(str(out))
    assert (vocab.vocab_size, vocab.num_sentinels, vocab.kind) == (600, sentinels, kind)
    assert capsys.readouterr().out.strip() == f"wrote {out / file}: {kind}, 600 ids, {sentinels} sentinels"


def test_a_sentencepiece_release_decodes_as_its_tokenizer_json_and_hf_do(documents, tmp_path):
    """A T5 release read from spiece.model alone writes text as HF's T5 tokenizer (and the same release's
    tokenizer.json read by plmjax) writes the same ids: sentinels glued to their neighbours, EOS shown."""
    import transformers

    from plmjax.data.tokenizer import Tokenizer

    path = vocabularies.train_vocabulary("sentencepiece", documents, 500, str(tmp_path / "spm"), 0)
    ours = vocabularies.load_vocabulary(path)
    (tmp_path / "release").mkdir()
    shutil.copyfile(path, tmp_path / "release" / "spiece.model")  # a release as HF hubs hold T5's
    hf = transformers.T5Tokenizer.from_pretrained(str(tmp_path / "release"), extra_ids=100)
    hf.save_pretrained(str(tmp_path / "hf"))
    released = Tokenizer.load(str(tmp_path / "hf" / "tokenizer.json"))
    ids = ours.encode("positional arguments construct the object")
    for case in (ids, [*ids[:2], ours.sentinel_id(68), *ids[2:], ours.eos_id],
                 [ours.sentinel_id(0), *ids, ours.sentinel_id(1), ours.eos_id, ours.pad_id, ours.pad_id],
                 [ours.unk_id, *ids]):
        expected = hf.decode([i for i in case if i != ours.pad_id], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
        assert ours.decode(case) == expected == released.decode(case), case
    assert "<extra_id_68>" in ours.decode([*ids[:2], ours.sentinel_id(68), *ids[2:]])
