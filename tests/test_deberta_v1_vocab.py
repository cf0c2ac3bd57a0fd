"""A DeBERTa v1 release's GPT-2 byte-level BPE (vocab.json + merges.txt) read as transformers 5's DebertaTokenizer
reads it.

The BPEs are small byte-level ones trained here on pydoc text (with a few accented lines). The release's is laid out
as microsoft/deberta-base's vocab.json is: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 before the BPE tokens (transformers'
integration test pads with 0 and frames with 1 ... 2) and [MASK] last. The texts reach what DebertaTokenizer does:
no normalization (case, accents, newlines, runs of spaces all kept, a leading space changes the first token), the
byte-level alphabet (emoji and CJK spelled in bytes, never unknown), [MASK] [CLS] matched anywhere in the raw text
without taking the space before them, and transformers 5's pair framing [CLS] A [SEP] [SEP] B [SEP] in segment 0.
"""

from __future__ import annotations

import json
import shutil

import pytest
import tokenizers
import transformers
from test_deberta_vocab import LINES  # the v2/v3 SentencePiece models' training text: pydoc, accented lines

from plmjax.cli import main
from plmjax.convert import directory, vocab
from plmjax.data.tokenizer import Tokenizer

VOCAB = 400  # vocab.json's size, [MASK] (the last) included
DEBERTA_CONFIG = {"do_lower_case": False, "vocab_type": "gpt2"}  # microsoft/deberta-base's tokenizer_config.json

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    " The same with a leading space",
    "UPPER Case and MiXeD cAsE Words",
    "  leading spaces, trailing ones   ",
    "runs     of   spaces\tand a tab",
    "line one\nline two\r\nline three\n\n",
    "Café naïve résumé; Zürich! cafe\u0301 decomposed",
    "Fill in the [MASK] here, a[MASK]b and [MASK].",
    "[CLS] literal specials [SEP] in [PAD] the [UNK] text",
    "punctuation: (a, b); {c}! d? e... 'f' \"g\" x-y_z @#$%^&*",
    "def f(x):\n    return x ** 2  # squared, 3.14 and 1,000",
    "日本語 and emoji 🙂 in bytes",
]
PAIRS = [(TEXTS[0], TEXTS[6]), ("Is it [MASK]?", "Yes,\n  it is."), (TEXTS[4], TEXTS[8]), ("", "only b")]


def _write_bpe(path, specials=(), mask_last=False):
    """vocab.json + merges.txt of a byte-level BPE with `specials` first and, if `mask_last`, [MASK] after the rest."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(LINES, vocab_size=VOCAB - mask_last, special_tokens=list(specials), show_progress=False)
    bpe.save_model(str(path))
    if mask_last:
        vocab_json = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
        assert len(vocab_json) == VOCAB - 1
        vocab_json["[MASK]"] = VOCAB - 1
        (path / "vocab.json").write_text(json.dumps(vocab_json, ensure_ascii=False), encoding="utf-8")


# deberta-base's vocab.json: its specials first, GPT-2's <|endoftext|> among the rest (a plain token to it).
SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "<|endoftext|>")


def _release(path, specials=SPECIALS, mask_last=True, tokenizer_config=DEBERTA_CONFIG):
    """A release directory holding vocab.json, merges.txt, config.json and tokenizer_config.json; no tokenizer.json."""
    path.mkdir()
    _write_bpe(path, specials, mask_last)
    (path / "config.json").write_text(json.dumps({"model_type": "deberta", "vocab_size": VOCAB}))
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _release(tmp_path_factory.mktemp("deberta_v1") / "release")


def _variant(release, path, tokenizer_config=None, special_tokens_map=None):
    """`release`'s vocab.json, merges.txt and config.json with this tokenizer_config.json (special_tokens_map.json)."""
    path.mkdir()
    for name in ("vocab.json", "merges.txt", "config.json"):
        shutil.copyfile(release / name, path / name)
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if special_tokens_map is not None:
        (path / "special_tokens_map.json").write_text(json.dumps(special_tokens_map))
    return path


def _assert_same_ids(ours: tokenizers.Tokenizer, reference) -> None:
    """`ours` (a plmjax Tokenizer's hf, or a bare tokenizers.Tokenizer) encodes as `reference`, framed or not."""
    for text in TEXTS:
        assert ours.encode(text, add_special_tokens=False).ids == \
            reference(text, add_special_tokens=False).input_ids, text
        framed, theirs = ours.encode(text), reference(text)
        assert (framed.ids, framed.type_ids) == (theirs.input_ids, theirs.token_type_ids), text
    for a, b in PAIRS:
        framed, theirs = ours.encode(a, b), reference(a, b)
        assert (framed.ids, framed.type_ids) == (theirs.input_ids, theirs.token_type_ids), (a, b)


def _assert_same_tokenizer_json(ours: tokenizers.Tokenizer, reference) -> None:
    """`ours` serializes as `reference`'s backend: the same BPE options (no dropout, no unk, ...), pre-tokenizer,
    decoder, framing and added tokens with their flags, which the texts alone cannot all reach."""
    assert json.loads(ours.to_str()) == json.loads(reference.backend_tokenizer.to_str())


def test_ids_are_debertatokenizer_s(release):
    assert not (release / "tokenizer.json").exists()
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaTokenizer.from_pretrained(release)
    _assert_same_ids(ours.hf, reference)
    _assert_same_tokenizer_json(ours.hf, reference)
    assert [ours.encode(t) for t in TEXTS] == [reference(t, add_special_tokens=False).input_ids for t in TEXTS]
    # the texts reach the literal specials, the byte alphabet and what no normalization keeps apart
    mask, cls, sep, space = reference.mask_token_id, reference.cls_token_id, reference.sep_token_id, \
        reference.convert_tokens_to_ids("Ġ")
    assert ours.encode(TEXTS[7]).count(mask) == 3 and cls in ours.encode(TEXTS[8])
    assert ours.encode("[MASK][CLS]") == [mask, cls] and ours.encode(" [MASK]") == [space, mask]  # no lstrip
    assert ours.unk_id not in ours.encode(TEXTS[11]) and len(ours.encode("🙂")) > 1
    assert ours.encode("The") != ours.encode(" The") and ours.encode("a\nb") != ours.encode("a b")
    assert ours.encode("Café") != ours.encode("cafe\u0301") and ours.encode("ÉCOLE") != ours.encode("école")
    # transformers 5's pair framing: a doubled [SEP], all of it in segment 0
    a, b = ours.encode("Is it"), ours.encode("yes")
    framed = ours.hf.encode("Is it", "yes")
    assert framed.ids == [cls, *a, sep, sep, *b, sep] and set(framed.type_ids) == {0}


def test_special_ids_agree(release):
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaTokenizer.from_pretrained(release)
    ids = {role: getattr(ours, f"{role}_id") for role in ("pad", "cls", "sep", "unk", "mask")}
    theirs = {role: getattr(reference, f"{role}_token_id") for role in ("pad", "cls", "sep", "unk", "mask")}
    assert ids == theirs == {"pad": 0, "cls": 1, "sep": 2, "unk": 3, "mask": VOCAB - 1}
    assert ours.kind == "bpe" and ours.eos_id == reference.eos_token_id == 2 and ours.num_sentinels == 0
    assert ours.vocab_size == len(reference) == VOCAB
    assert ours.special_ids == {0, 1, 2, 3, VOCAB - 1} == set(reference.all_special_ids)
    flags = {t.content: (t.lstrip, t.rstrip, t.normalized) for t in ours.hf.get_added_tokens_decoder().values()}
    theirs = {t.content: (t.lstrip, t.rstrip, t.normalized)
              for t in reference.backend_tokenizer.get_added_tokens_decoder().values()}
    assert flags == theirs and flags["[MASK]"] == (False, False, False)


def test_add_prefix_space_is_honoured(release, tmp_path):
    plain = vocab.release_tokenizer(release)
    spaced = vocab.release_tokenizer(_variant(release, tmp_path / "spaced", {"add_prefix_space": True}))
    reference = transformers.DebertaTokenizer.from_pretrained(tmp_path / "spaced")
    assert reference.add_prefix_space
    _assert_same_ids(spaced.hf, reference)
    _assert_same_tokenizer_json(spaced.hf, reference)
    assert spaced.encode("The fox") == plain.encode(" The fox") == spaced.encode(" The fox") != plain.encode("The fox")
    off = vocab.release_tokenizer(_variant(release, tmp_path / "off", {"add_prefix_space": False}))
    assert [off.encode(t) for t in TEXTS] == [plain.encode(t) for t in TEXTS]
    # a release without tokenizer_config.json reads as deberta-base's (no prefix space)
    bare = vocab.release_tokenizer(_variant(release, tmp_path / "bare"))
    assert [bare.encode(t) for t in TEXTS] == [plain.encode(t) for t in TEXTS]


V4_MASK = {"content": "[MASK]", "lstrip": True, "rstrip": False, "normalized": True, "single_word": False}


@pytest.mark.parametrize("saved", ["added_tokens_decoder", "mask_token", "special_tokens_map"])
def test_added_token_flags_from_the_release_are_honoured(release, tmp_path, saved):
    """As transformers 4 saved a DebertaTokenizer ([MASK] taking the space before it), in its three layouts."""
    if saved == "added_tokens_decoder":  # with a token the fine-tuning added, appended after the vocabulary
        config = {"added_tokens_decoder": {
            str(VOCAB): {"content": "<new>", "lstrip": False, "rstrip": False, "normalized": True,
                         "single_word": False, "special": False},
            str(VOCAB - 1): {**V4_MASK, "special": True},
            "1": {"content": "[CLS]", "lstrip": False, "rstrip": True, "normalized": False, "single_word": False,
                  "special": True}},
            # added_tokens_decoder's flags win over a named token's
            "mask_token": {"__type": "AddedToken", **V4_MASK, "lstrip": False}}
        path = _variant(release, tmp_path / saved, config)
    elif saved == "mask_token":
        path = _variant(release, tmp_path / saved, {"mask_token": {"__type": "AddedToken", **V4_MASK}})
    else:
        path = _variant(release, tmp_path / saved, {}, {"mask_token": V4_MASK, "cls_token": "[CLS]"})
    ours = vocab.release_tokenizer(path)
    reference = transformers.DebertaTokenizer.from_pretrained(path)
    _assert_same_ids(ours.hf, reference)
    _assert_same_tokenizer_json(ours.hf, reference)
    mask = reference.mask_token_id
    assert ours.encode("fill the [MASK] in") == ours.encode("fill the[MASK] in") != \
        vocab.release_tokenizer(release).encode("fill the [MASK] in")
    assert ours.special_ids == set(reference.all_special_ids) and ours.mask_id == mask == VOCAB - 1
    if saved == "added_tokens_decoder":
        assert ours.hf.token_to_id("<new>") == reference.convert_tokens_to_ids("<new>") == VOCAB
        assert ours.encode("x<new>y") == reference("x<new>y", add_special_tokens=False).input_ids
        assert ours.encode("[CLS] x") == ours.encode("[CLS]x")  # rstrip
        assert ours.vocab_size == len(reference) == VOCAB + 1


def test_decode_round_trips(release, tmp_path):
    ours = vocab.release_tokenizer(release)
    reference = transformers.DebertaTokenizer.from_pretrained(release)
    for text in TEXTS[:7] + TEXTS[9:] + ["fill in the [MASK] here", "a[MASK]b [SEP] c"]:
        ids = ours.encode(text)
        assert ours.decode(ids) == text == reference.decode(ids), text
    framed = ours.hf.encode(TEXTS[0], "and b").ids
    assert ours.decode(framed) == f"[CLS]{TEXTS[0]}[SEP][SEP]and b[SEP]" == reference.decode(framed)
    ours.save(tmp_path / "tokenizer.json")  # what a converted checkpoint keeps
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    assert [again.encode(t) for t in TEXTS] == [ours.encode(t) for t in TEXTS] and again.mask_id == VOCAB - 1
    assert again.hf.encode(*PAIRS[1]).ids == reference(*PAIRS[1]).input_ids


def test_a_vocab_without_deberta_s_specials_is_refused(release, tmp_path):
    # no specials in vocab.json: transformers appends them, at ids that need not be the checkpoint's
    bare = _release(tmp_path / "bare", specials=(), mask_last=False, tokenizer_config=None)
    with pytest.raises(ValueError, match=r"vocab.json in .*bare.* lacks the special tokens "
                                         r"\['\[PAD\]', '\[CLS\]', '\[SEP\]', '\[UNK\]'\] among its pieces"):
        vocab.release_tokenizer(bare)
    # ... though deberta_from_bpe reads it as transformers does, appending [CLS] [SEP] [UNK] [PAD] [MASK]
    reference = transformers.DebertaTokenizer.from_pretrained(bare)
    built = vocab.deberta_from_bpe(bare / "vocab.json", bare / "merges.txt")
    _assert_same_ids(built, reference)
    _assert_same_tokenizer_json(built, reference)
    appended = ["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"]
    assert [built.token_to_id(t) for t in appended] == reference.convert_tokens_to_ids(appended) == \
        list(range(VOCAB, VOCAB + 5))
    # [MASK] alone may be appended (as DeBERTa v3's is): the release converts
    no_mask = _release(tmp_path / "no_mask", mask_last=False)
    ours = vocab.release_tokenizer(no_mask)
    reference = transformers.DebertaTokenizer.from_pretrained(no_mask)
    _assert_same_ids(ours.hf, reference)
    assert ours.mask_id == reference.mask_token_id == VOCAB and ours.pad_id == 0
    # a DeBERTa v1 release's tokenizer.json without [MASK] cannot mask sequences
    shutil.copyfile(release / "config.json", tmp_path / "config.json")
    no_mask = tokenizers.Tokenizer(tokenizers.models.BPE(
        {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "a": 4}, [], unk_token="[UNK]"))
    no_mask.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"DeBERTa tokenizer in .* lacks the special tokens \['\[MASK\]'\]"):
        vocab.release_tokenizer(tmp_path)
    # vocab.json + merges.txt of another family (GPT-2, RoBERTa) is not read as DeBERTa's
    other = _variant(release, tmp_path / "roberta")
    (other / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert vocab.release_tokenizer(other) is None
    (other / "config.json").write_text(json.dumps({"model_type": "deberta"}))
    (other / "merges.txt").unlink()
    assert vocab.release_tokenizer(other) is None


def test_convert_a_release_with_only_vocab_json_and_merges(release, tmp_path):
    """`plmjax convert --from hf` on a DeBERTa v1 release shipping vocab.json + merges.txt: the checkpoint gets its
    tokenizer.json."""
    import torch

    config = transformers.DebertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=64, relative_attention=True, pos_att_type="c2p|p2c")
    torch.manual_seed(0)
    hf_dir = tmp_path / "release"
    shutil.copytree(release, hf_dir)
    transformers.DebertaForMaskedLM(config).save_pretrained(hf_dir)
    assert not (hf_dir / "tokenizer.json").exists()
    out = tmp_path / "converted"
    assert main(["convert", "--from", "hf", str(hf_dir), "--out", str(out)]) == 0
    assert (out / "tokenizer.json").is_file()
    tokenizer = directory.load_tokenizer(str(out), directory.read_config(str(out)))
    reference = transformers.DebertaTokenizer.from_pretrained(hf_dir)
    assert [tokenizer.encode(t) for t in TEXTS] == [reference(t, add_special_tokens=False).input_ids for t in TEXTS]
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 1, 2, VOCAB - 1)
    assert tokenizer.vocab_size == directory.read_config(str(out)).model.vocab_size == VOCAB
