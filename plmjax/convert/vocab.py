"""The vocabulary a release ships -> the plmjax Tokenizer its converted checkpoint uses.

Read, in order of preference: an HF `tokenizer.json` (any WordPiece, BPE or Unigram one), a
BERT `vocab.txt` (Google's TF1 releases and old HF ones), an ALBERT release's SentencePiece
`spiece.model`, rebuilt as the tokenizer.json transformers' AlbertTokenizer makes of it (a T5
release's spiece.model is read as it is instead, with its sentinels), a DeBERTa v2/v3 release's
SentencePiece `spm.model`, rebuilt as transformers 5's DebertaV2Tokenizer makes it (with the release's
tokenizer_config.json do_lower_case, split_by_punct and add_prefix_space), or a DeBERTa v1 release's GPT-2
byte-level BPE `vocab.json` + `merges.txt`, rebuilt as transformers 5's DebertaTokenizer makes it (with
tokenizer_config.json's add_prefix_space and the flags it gives added tokens). A released tokenizer.json may
fix a padding length or truncation for its original pipeline; both are removed, since plmjax pads
and truncates its own batches. An ALBERT or DeBERTa vocabulary without [CLS] [SEP] [MASK] is refused, and
so is a DeBERTa spm.model or vocab.json lacking one of the [PAD] [CLS] [SEP] [UNK] pieces DeBERTa's own hold.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from plmjax.data.tokenizer import Tokenizer


def release_tokenizer(directory: str | pathlib.Path) -> Tokenizer | None:
    """The release's tokenizer, or None if it ships none of the files (a T5 release may ship only a
    SentencePiece spiece.model, which `release` copies over as it is)."""
    directory = pathlib.Path(directory)
    if (directory / "tokenizer.json").is_file():
        hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif (directory / "vocab.txt").is_file():
        hf = wordpiece_from_vocab(directory / "vocab.txt", lowercase=_lowercase(directory))
    elif (directory / "spiece.model").is_file() and _model_type(directory) == "albert":
        hf = albert_from_spm(directory / "spiece.model", **_albert_options(directory))
    elif (directory / "spm.model").is_file() and _model_type(directory) == "deberta-v2":
        hf = deberta_from_spm(directory / "spm.model", **_deberta_options(directory))
        _check_specials(hf, directory, "DeBERTa", own_pieces=DEBERTA_PIECES)
    elif all((directory / name).is_file() for name in BPE_FILES) and _model_type(directory) == "deberta":
        hf = deberta_from_bpe(*(directory / name for name in BPE_FILES), **_deberta_bpe_options(directory))
        _check_specials(hf, directory, "DeBERTa", own_pieces=DEBERTA_PIECES, source="vocab.json")
    else:
        return None
    hf.no_padding()
    hf.no_truncation()
    family = {"albert": "ALBERT", "deberta": "DeBERTa", "deberta-v2": "DeBERTa"}.get(_model_type(directory))
    if family:
        _check_specials(hf, directory, family)
    return Tokenizer(hf)


def _model_type(directory: pathlib.Path) -> str | None:
    path = directory / "config.json"
    try:
        return json.loads(path.read_text()).get("model_type") if path.is_file() else None
    except (ValueError, AttributeError):
        return None


def _tokenizer_config(directory: pathlib.Path) -> dict:
    path = directory / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _lowercase(directory: pathlib.Path) -> bool:
    """tokenizer_config.json's do_lower_case when present; BERT's default (uncased) otherwise."""
    return bool(_tokenizer_config(directory).get("do_lower_case", True))


def wordpiece_from_vocab(path: str | pathlib.Path, lowercase: bool = True) -> tokenizers.Tokenizer:
    """BERT's tokenizer from its vocab.txt: basic tokenization, WordPiece, [CLS] text [SEP] framing."""
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(lines)}  # as HF's load_vocab: a repeated line keeps its last id
    hf = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    hf.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece()
    cls, sep = ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])
    hf.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    hf.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab])
    return hf


# ALBERT's special tokens, in its SentencePiece models' id order; the MLM objective and fine-tuning
# frame sequences with [CLS] ... [SEP] and mask with [MASK].
ALBERT_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
# DeBERTa v2/v3's special tokens, in the order transformers appends those a SentencePiece model lacks (its
# bos, eos, unk, sep, pad, cls, mask attributes). DeBERTa's spm.model holds [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3
# and no [MASK], which comes right after its pieces.
DEBERTA_SPECIALS = ("[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]")
# The special tokens DeBERTa's own vocabularies hold among their pieces: v2/v3's spm.model at 0-3, v1's vocab.json
# (microsoft/deberta-base's: GPT-2's byte-level BPE in RoBERTa's id order, [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3).
DEBERTA_PIECES = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
BPE_FILES = ("vocab.json", "merges.txt")  # a byte-level BPE's vocabulary and merges, as GPT-2 ships them
_FRAMING = ("[CLS]", "[SEP]", "[MASK]")  # what masked-LM training and fine-tuning frame and mask sequences with


def _albert_options(directory: pathlib.Path) -> dict[str, bool]:
    """AlbertTokenizer's options from tokenizer_config.json; its defaults (uncased, accents stripped) otherwise."""
    config = _tokenizer_config(directory)
    return {"lowercase": bool(config.get("do_lower_case", True)),
            "keep_accents": bool(config.get("keep_accents", False))}


def _deberta_options(directory: pathlib.Path) -> dict[str, bool]:
    """DebertaV2Tokenizer's options from tokenizer_config.json; its defaults (cased, no punctuation split, a
    ▁ before every chunk) otherwise."""
    config = _tokenizer_config(directory)
    return {"lowercase": bool(config.get("do_lower_case", False)),
            "split_by_punct": bool(config.get("split_by_punct", False)),
            "add_prefix_space": bool(config.get("add_prefix_space", True))}


def _deberta_bpe_options(directory: pathlib.Path) -> dict:
    """DebertaTokenizer's options from tokenizer_config.json, as transformers reads them: add_prefix_space (default
    False); its added_tokens_decoder, in id order; and the flags of the special tokens it describes, by name -- in
    added_tokens_decoder, else as a special token (mask_token, ...) given as an AddedToken (as transformers 4 saved
    them, [MASK] with lstrip), in a legacy special_tokens_map.json or tokenizer_config.json."""
    config = _tokenizer_config(directory)
    decoder = config.get("added_tokens_decoder") or {}
    named = [value for key, value in config.items()
             if key.endswith("_token") and isinstance(value, dict) and value.get("__type") == "AddedToken"]
    legacy = directory / "special_tokens_map.json"
    if not decoder and legacy.is_file():  # transformers reads it only without added_tokens_decoder
        named += [value for value in json.loads(legacy.read_text()).values() if isinstance(value, dict)]
    added = [tokenizers.AddedToken(**decoder[i]) for i in sorted(decoder, key=int)]
    tokens = [tokenizers.AddedToken(**{k: v for k, v in fields.items() if k != "__type"}) for fields in named]
    return {"add_prefix_space": bool(config.get("add_prefix_space", False)), "added_tokens": added,
            "specials": {token.content: token for token in tokens + added}}


def _special_token(content: str, flags: tokenizers.AddedToken | None = None) -> tokenizers.AddedToken:
    """`content` as a special token matched on the raw text, or with the flags (lstrip, ...) of `flags`."""
    if flags is None:
        return tokenizers.AddedToken(content, normalized=False, special=True)
    return tokenizers.AddedToken(content, single_word=flags.single_word, lstrip=flags.lstrip, rstrip=flags.rstrip,
                                 normalized=flags.normalized, special=True)


def _check_specials(hf: tokenizers.Tokenizer, directory: pathlib.Path, family: str,
                    own_pieces: tuple[str, ...] = (), source: str = "SentencePiece model") -> None:
    """Refuse a `family` tokenizer without [CLS] [SEP] [MASK], or whose `own_pieces` are not pieces of its
    model (read from its `source`) but tokens appended after them."""
    missing = [token for token in _FRAMING if hf.token_to_id(token) is None]
    if missing:
        raise ValueError(f"the {family} tokenizer in {str(directory)!r} lacks the special tokens {missing} "
                         "that masked-LM training and fine-tuning frame and mask sequences with")
    pieces = hf.get_vocab_size(with_added_tokens=False)
    appended = [token for token in own_pieces if (hf.token_to_id(token) or 0) >= pieces]
    if appended:
        raise ValueError(
            f"the {family} {source} in {str(directory)!r} lacks the special tokens {appended} among its "
            f"pieces ({family}'s own hold {' '.join(own_pieces)}): appended after the pieces, as transformers "
            "would, their ids need not be those the checkpoint was trained with")


def _spm_proto(path: str | pathlib.Path, family: str):
    """The unigram SentencePiece model at `path` as its protobuf; reading it needs the sentencepiece and protobuf
    packages (plmjax's `data` extra)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:
        raise ValueError(
            f"building a tokenizer.json from the {family} SentencePiece model {str(path)!r} needs the sentencepiece "
            f"and protobuf packages (pip install 'plmjax[data]'), or ship the release's tokenizer.json ({e})"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(pathlib.Path(path).read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: not a SentencePiece model
        raise ValueError(f"{str(path)!r} is not a SentencePiece model: {e}") from None
    if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
        raise ValueError(f"{str(path)!r} is not a unigram SentencePiece model, as {family}'s are")
    return proto


def _spm_unigram(proto, unk_id: int) -> tokenizers.Tokenizer:
    """The model's pieces and scores as a Unigram model."""
    return tokenizers.Tokenizer(models.Unigram([(p.piece, p.score) for p in proto.pieces],
                                               unk_id=unk_id, byte_fallback=False))


def _add_spm_tokens(hf: tokenizers.Tokenizer, proto, special: list[str]) -> None:
    """As transformers: `special` are special tokens (a name that is not a piece gets the next free id, in
    order), the model's other user-defined pieces plain added tokens; all matched on the raw text."""
    hf.add_special_tokens([_special_token(t) for t in special])
    hf.add_tokens([tokenizers.AddedToken(p.piece, normalized=False) for p in proto.pieces
                   if p.type == proto.SentencePiece.USER_DEFINED and p.piece not in special])


def _cls_sep_framing(cls_id: int, sep_id: int, double_sep: bool = False) -> processors.TemplateProcessing:
    """[CLS] A [SEP], and [CLS] A [SEP] B [SEP] with B's part (its [SEP] too) in segment 1 -- or, `double_sep`,
    RoBERTa's [CLS] A [SEP] [SEP] B [SEP], all of it in segment 0."""
    pair = "[CLS]:0 $A:0 [SEP]:0 [SEP]:0 $B:0 [SEP]:0" if double_sep else "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"
    return processors.TemplateProcessing(single="[CLS]:0 $A:0 [SEP]:0", pair=pair,
                                         special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])


def albert_from_spm(path: str | pathlib.Path, lowercase: bool = True,
                    keep_accents: bool = False) -> tokenizers.Tokenizer:
    """The tokenizer transformers' AlbertTokenizer builds from an ALBERT SentencePiece model (transformers 5):
    the model's pieces and scores as a Unigram model; ``/'' -> ", NFKD + accent stripping (unless
    `keep_accents`), lowercasing and the model's own normalization (its precompiled charsmap); whitespace
    split with a ▁ prefix; [CLS] text [SEP] framing. Reading the model file needs the sentencepiece and
    protobuf packages (plmjax's `data` extra)."""
    proto = _spm_proto(path, "ALBERT")
    hf = _spm_unigram(proto, proto.trainer_spec.unk_id)
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not keep_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    if proto.normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    hf.normalizer = normalizers.Sequence(steps)
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    if "[CLS]" in vocab and "[SEP]" in vocab:
        hf.post_processor = _cls_sep_framing(vocab["[CLS]"], vocab["[SEP]"])
    # control pieces and ALBERT's named specials are special tokens
    kinds = proto.SentencePiece
    _add_spm_tokens(hf, proto, [p.piece for p in proto.pieces
                                if p.type in (kinds.CONTROL, kinds.UNKNOWN) or p.piece in ALBERT_SPECIALS])
    return hf


def deberta_from_spm(path: str | pathlib.Path, lowercase: bool = False, split_by_punct: bool = False,
                     add_prefix_space: bool = True) -> tokenizers.Tokenizer:
    """The tokenizer transformers 5's DebertaV2Tokenizer builds from a DeBERTa v2/v3 spm.model: the model's
    pieces and scores as a Unigram model, its unk the piece [UNK] if scored 0 (DeBERTa's) and the model's
    unk_id otherwise; lowercasing (`lowercase`), whitespace runs, newlines, tabs -> one space, NFC and trailing
    whitespace stripped -- not the model's own normalization (its precompiled charsmap), which transformers 5
    leaves out; punctuation isolated (`split_by_punct`); split at spaces, each chunk with a ▁ prefix
    (`add_prefix_space`; else only the text's first); [CLS] text [SEP] framing. The model's control pieces and
    [CLS] [SEP] [UNK] [PAD] [MASK] are special tokens, those of them the model lacks appended after its pieces
    (DeBERTa v3's [MASK]). Reading the model file needs the sentencepiece and protobuf packages."""
    proto = _spm_proto(path, "DeBERTa")
    unk_id = next((i for i, p in enumerate(proto.pieces) if (p.piece, p.score) == ("[UNK]", 0.0)),
                  proto.trainer_spec.unk_id)
    hf = _spm_unigram(proto, unk_id)
    steps = [normalizers.Lowercase()] if lowercase else []
    steps += [normalizers.Replace(tokenizers.Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
              normalizers.Strip(left=False, right=True)]
    hf.normalizer = normalizers.Sequence(steps)
    prepend_scheme = "always" if add_prefix_space else "first"
    splits = [pre_tokenizers.Punctuation(behavior="isolated")] if split_by_punct else []
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        splits + [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)])
    hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    pieces = {p.piece for p in proto.pieces}
    _add_spm_tokens(hf, proto, [p.piece for p in proto.pieces
                                if p.type == proto.SentencePiece.CONTROL or p.piece in DEBERTA_SPECIALS]
                    + [t for t in DEBERTA_SPECIALS if t not in pieces])
    hf.post_processor = _cls_sep_framing(hf.token_to_id("[CLS]"), hf.token_to_id("[SEP]"))
    return hf


def deberta_from_bpe(vocab_path: str | pathlib.Path, merges_path: str | pathlib.Path, add_prefix_space: bool = False,
                     added_tokens: Sequence[tokenizers.AddedToken] = (),
                     specials: Mapping[str, tokenizers.AddedToken] | None = None) -> tokenizers.Tokenizer:
    """The tokenizer transformers 5's DebertaTokenizer builds from a DeBERTa v1 release's GPT-2 byte-level BPE
    vocab.json + merges.txt: a BPE model of them with no dropout, unknown token, subword prefix or suffix; no
    normalization; GPT-2's byte-level split (a space before the text's first word if `add_prefix_space`) and
    decoding; [CLS] text [SEP] framing, and [CLS] A [SEP] [SEP] B [SEP] for pairs, all in segment 0 (transformers
    4 and microsoft/DeBERTa framed a pair [CLS] A [SEP] B [SEP], B in segment 1). `added_tokens` (a
    tokenizer_config.json's added_tokens_decoder) are added first, in order; then [CLS] [SEP] [UNK] [PAD] [MASK]
    are special tokens matched on the raw text, or with the flags (lstrip, ...) `specials` gives them by name -- by
    default [MASK] does not take the space before it, though DebertaTokenizer's docstring says it does --, those
    the vocabulary lacks appended after it in that order."""
    vocab, merges = models.BPE.read_file(str(vocab_path), str(merges_path))
    hf = tokenizers.Tokenizer(models.BPE(vocab, merges, dropout=None, unk_token=None, continuing_subword_prefix="",
                                         end_of_word_suffix="", fuse_unk=False))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_tokens(list(added_tokens))
    hf.add_special_tokens([_special_token(t, (specials or {}).get(t)) for t in DEBERTA_SPECIALS])
    hf.post_processor = _cls_sep_framing(hf.token_to_id("[CLS]"), hf.token_to_id("[SEP]"), double_sep=True)
    return hf
