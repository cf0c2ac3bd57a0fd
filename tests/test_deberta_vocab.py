"""A DeBERTa v2/v3 release's SentencePiece spm.model read as transformers 5's DebertaV2Tokenizer reads it.

The SentencePiece models are small unigram ones trained here on pydoc text (with a few accented lines, every
character kept), laid out as DeBERTa v3's spm.model is: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 as its pad, bos, eos
and unk pieces, and no [MASK], which the tokenizer appends after the pieces. The texts reach what
DebertaV2Tokenizer does differently from SentencePiece itself: newlines and tabs made spaces, NFC rather than
the model's NFKC charsmap (a decomposed accent is composed, full-width letters stay unknown), only trailing
whitespace stripped, and [MASK] [CLS] matched anywhere in the raw text.
"""

from __future__ import annotations

import io
import json
import shutil

import pytest
import tokenizers
import transformers
from pydoc_data.topics import topics

from plmjax.cli import main
from plmjax.convert import directory, vocab
from plmjax.data.tokenizer import Tokenizer

PIECES = 300
ACCENTED = ["Café au lait, naïve façade, résumé and déjà vu.", "Ærøskøbing, Zürich, São Paulo, Kraków; ÉCOLE!"]
LINES = [line for doc in list(topics.values())[:40] for line in doc.splitlines() if line.strip()]
LINES += ACCENTED * 20
V3_LAYOUT = dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
                 unk_piece="[UNK]")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "UPPER Case and MiXeD cAsE Words",
    "  leading spaces, trailing ones   ",
    "runs     of   spaces\tand a tab",
    "line one\nline two\r\nline three\n\n",
    "Café naïve résumé; Zürich!",
    "decomposed cafe\u0301 and full-width ＡＢＣ",
    "Fill in the [MASK] here, a[MASK]b and [MASK].",
    "[CLS] literal specials [SEP] in [PAD] the [UNK] text",
    "punctuation: (a, b); {c}! d? e... 'f' \"g\" x-y_z @#$%^&*",
    "def f(x):\n    return x ** 2  # squared",
    "日本語 and emoji 🙂 are unknown",
]
PAIRS = [(TEXTS[0], TEXTS[5]), ("Is it [MASK]?", "Yes,\n  it is."), (TEXTS[3], TEXTS[8]), ("", "only b")]


def _release(path, spm_layout=V3_LAYOUT, tokenizer_config=None):
    """A release directory holding spm.model, config.json and, if given, tokenizer_config.json; no tokenizer.json."""
    import sentencepiece

    path.mkdir()
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES), model_writer=model, vocab_size=PIECES, model_type="unigram",
        character_coverage=1.0, minloglevel=2, num_threads=1, **spm_layout)
    (path / "spm.model").write_bytes(model.getvalue())
    (path / "config.json").write_text(json.dumps({"model_type": "deberta-v2", "vocab_size": PIECES + 1}))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _release(tmp_path_factory.mktemp("deberta") / "release")


def _variant(release, path, tokenizer_config):
    """`release`'s spm.model and config.json with this tokenizer_config.json."""
    path.mkdir()
    for name in ("spm.model", "config.json"):
        shutil.copyfile(release / name, path / name)
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def _assert_same_ids(ours: Tokenizer, reference) -> None:
    for text in TEXTS:
        assert ours.encode(text) == reference(text, add_special_tokens=False).input_ids, text
        framed = ours.hf.encode(text)
        theirs = reference(text)
        assert (framed.ids, framed.type_ids) == (theirs.input_ids, theirs.token_type_ids), text
    for a, b in PAIRS:
        framed = ours.hf.encode(a, b)
        theirs = reference(a, b)
        assert (framed.ids, framed.type_ids) == (theirs.input_ids, theirs.token_type_ids), (a, b)


def test_ids_are_debertav2tokenizer_s(release):
    assert not (release / "tokenizer.json").exists()
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaV2Tokenizer.from_pretrained(release)
    _assert_same_ids(ours, reference)
    # the texts reach the unknown piece, the appended [MASK], composed accents and both segments
    unk, mask = reference.unk_token_id, reference.mask_token_id
    assert unk in ours.encode(TEXTS[11]) and unk in ours.encode(TEXTS[6]) and mask in ours.encode(TEXTS[7])
    assert ours.encode("cafe\u0301") == ours.encode("café") and unk not in ours.encode(TEXTS[5])
    assert ours.encode("a\n\tb") == ours.encode("a b") and ours.encode("a   b") == ours.encode("a b")
    assert ours.encode("  x") == ours.encode("x") == ours.encode("x  ")  # Metaspace absorbs a leading space
    assert ours.encode("[MASK][CLS]") == [mask, reference.cls_token_id]


def test_special_ids_agree(release):
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaV2Tokenizer.from_pretrained(release)
    ids = {role: getattr(ours, f"{role}_id") for role in ("pad", "cls", "sep", "unk", "mask")}
    theirs = {role: getattr(reference, f"{role}_token_id") for role in ("pad", "cls", "sep", "unk", "mask")}
    assert ids == theirs == {"pad": 0, "cls": 1, "sep": 2, "unk": 3, "mask": PIECES}
    assert ours.kind == "unigram" and ours.eos_id == 2 and ours.num_sentinels == 0
    assert ours.vocab_size == len(reference) == PIECES + 1
    assert ours.special_ids == {0, 1, 2, 3, PIECES} == set(reference.all_special_ids)


def test_tokenizer_config_options_are_honoured(release, tmp_path):
    cased = vocab.release_tokenizer(release)
    lowered = vocab.release_tokenizer(_variant(release, tmp_path / "lower", {"do_lower_case": True}))
    reference = transformers.DebertaV2Tokenizer.from_pretrained(tmp_path / "lower")
    assert reference.do_lower_case
    _assert_same_ids(lowered, reference)
    text = "UPPER Case ÉCOLE"
    assert lowered.encode(text) == cased.encode(text.lower()) != cased.encode(text)
    options = {"do_lower_case": False, "split_by_punct": True, "add_prefix_space": False}
    other = vocab.release_tokenizer(_variant(release, tmp_path / "punct", options))
    reference = transformers.DebertaV2Tokenizer.from_pretrained(tmp_path / "punct")
    _assert_same_ids(other, reference)
    assert other.encode(TEXTS[9]) != cased.encode(TEXTS[9]) and other.encode("[MASK]x") != cased.encode("[MASK]x")


def test_decode_round_trips_plain_text(release, tmp_path):
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaV2Tokenizer.from_pretrained(release)
    for text in (TEXTS[0], "Café naïve résumé; Zürich!", "return x ** 2 (squared), and more",
                 "(a, b); {c}! d? e... 'f' \"g\" x-y_z"):
        ids = ours.encode(text)
        assert ours.decode(ids) == text == reference.decode(ids)
    # the text before an added token is stripped on the right, so the space before [MASK] is lost
    ids = ours.encode("fill in the [MASK] here")
    assert ours.decode(ids) == "fill in the[MASK] here" == reference.decode(ids)
    assert ids == ours.encode("fill in the[MASK]here")
    framed = ours.hf.encode(TEXTS[0], "and b").ids
    assert ours.decode(framed) == f"[CLS] {TEXTS[0]}[SEP] and b[SEP]" == reference.decode(framed)
    ours.save(tmp_path / "tokenizer.json")  # what a converted checkpoint keeps
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert [again.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS] and again.mask_id == PIECES


def test_a_spm_without_deberta_s_pieces_is_refused(tmp_path):
    # no [CLS] piece: transformers would append it after the pieces, at an id that need not be the checkpoint's
    no_cls = _release(tmp_path / "no_cls", dict(V3_LAYOUT, bos_id=-1, eos_id=1, unk_id=2))
    with pytest.raises(ValueError, match=r"no_cls.*lacks the special tokens \['\[CLS\]'\] among its pieces"):
        vocab.release_tokenizer(no_cls)
    # T5's layout (<pad> </s> <unk>) has none of them
    t5 = _release(tmp_path / "t5", dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]', '\[CLS\]', '\[SEP\]', '\[UNK\]'\]"):
        vocab.release_tokenizer(t5)
    # ... though transformers reads it, appending [CLS] [SEP] [UNK] [PAD] [MASK] in its own order
    reference = transformers.DebertaV2Tokenizer.from_pretrained(t5)
    built = vocab.deberta_from_spm(t5 / "spm.model")
    appended = ["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"]
    assert [built.token_to_id(t) for t in appended] == reference.convert_tokens_to_ids(appended) == \
        list(range(PIECES, PIECES + 5))
    assert built.encode(TEXTS[8], TEXTS[7]).ids == reference(TEXTS[8], TEXTS[7]).input_ids
    # a DeBERTa release's tokenizer.json without [MASK] cannot mask sequences
    shutil.copyfile(no_cls / "config.json", tmp_path / "config.json")
    no_mask = tokenizers.Tokenizer(tokenizers.models.Unigram(
        [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("▁a", -1.0)], unk_id=3))
    no_mask.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"DeBERTa tokenizer in .* lacks the special tokens \['\[MASK\]'\]"):
        vocab.release_tokenizer(tmp_path)
    # and a file that is no SentencePiece model says so
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "spm.model").write_bytes(b"\xff not a model")
    shutil.copyfile(no_cls / "config.json", tmp_path / "bad" / "config.json")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        vocab.release_tokenizer(tmp_path / "bad")


def test_convert_a_release_with_only_spm_model(release, tmp_path):
    """`plmjax convert --from hf` on a DeBERTa v3 release shipping spm.model: the checkpoint gets its tokenizer.json."""
    import torch

    config = transformers.DebertaV2Config(
        vocab_size=PIECES + 1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
        max_position_embeddings=32, relative_attention=True, position_buckets=8, pos_att_type="p2c|c2p",
        norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, type_vocab_size=0)
    torch.manual_seed(0)
    hf_dir = tmp_path / "release"
    shutil.copytree(release, hf_dir)
    transformers.DebertaV2ForMaskedLM(config).save_pretrained(hf_dir)
    out = tmp_path / "converted"
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()
    tokenizer = directory.load_tokenizer(str(out), directory.read_config(str(out)))
    reference = transformers.DebertaV2Tokenizer.from_pretrained(hf_dir)
    assert [tokenizer.encode(t) for t in TEXTS] == [reference(t, add_special_tokens=False).input_ids for t in TEXTS]
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (1, 2, PIECES)
