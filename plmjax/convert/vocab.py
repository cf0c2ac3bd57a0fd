"""The vocabulary a release ships -> the plmjax Tokenizer its converted checkpoint uses.

Read, in order of preference: an HF `tokenizer.json` (any WordPiece, BPE or Unigram one), a
BERT `vocab.txt` (Google's TF1 releases and old HF ones), or an ALBERT release's SentencePiece
`spiece.model`, rebuilt as the tokenizer.json transformers' AlbertTokenizer makes of it (a T5
release's spiece.model is read as it is instead, with its sentinels). A released tokenizer.json may
fix a padding length or truncation for its original pipeline; both are removed, since plmjax pads
and truncates its own batches.
"""

from __future__ import annotations

import json
import pathlib

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
    else:
        return None
    hf.no_padding()
    hf.no_truncation()
    if _model_type(directory) == "albert":
        _check_albert(hf, directory)
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


def _albert_options(directory: pathlib.Path) -> dict[str, bool]:
    """AlbertTokenizer's options from tokenizer_config.json; its defaults (uncased, accents stripped) otherwise."""
    config = _tokenizer_config(directory)
    return {"lowercase": bool(config.get("do_lower_case", True)),
            "keep_accents": bool(config.get("keep_accents", False))}


def _check_albert(hf: tokenizers.Tokenizer, directory: pathlib.Path) -> None:
    missing = [token for token in ALBERT_SPECIALS[2:] if hf.token_to_id(token) is None]
    if missing:
        raise ValueError(f"the ALBERT tokenizer in {str(directory)!r} lacks the special tokens {missing} "
                         "that masked-LM training and fine-tuning frame and mask sequences with")


def albert_from_spm(path: str | pathlib.Path, lowercase: bool = True,
                    keep_accents: bool = False) -> tokenizers.Tokenizer:
    """The tokenizer transformers' AlbertTokenizer builds from an ALBERT SentencePiece model (transformers 5):
    the model's pieces and scores as a Unigram model; ``/'' -> ", NFKD + accent stripping (unless
    `keep_accents`), lowercasing and the model's own normalization (its precompiled charsmap); whitespace
    split with a ▁ prefix; [CLS] text [SEP] framing. Reading the model file needs the sentencepiece and
    protobuf packages (plmjax's `data` extra)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:
        raise ValueError(
            f"building a tokenizer.json from the ALBERT SentencePiece model {str(path)!r} needs the sentencepiece "
            f"and protobuf packages (pip install 'plmjax[data]'), or ship the release's tokenizer.json ({e})"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(pathlib.Path(path).read_bytes())
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: not a SentencePiece model
        raise ValueError(f"{str(path)!r} is not a SentencePiece model: {e}") from None
    if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
        raise ValueError(f"{str(path)!r} is not a unigram SentencePiece model, as ALBERT's are")
    hf = tokenizers.Tokenizer(models.Unigram([(p.piece, p.score) for p in proto.pieces],
                                             unk_id=proto.trainer_spec.unk_id, byte_fallback=False))
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
        hf.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    # As transformers: control pieces and ALBERT's named specials are special tokens, other user-defined
    # pieces plain added tokens; all matched on the raw text.
    kinds = proto.SentencePiece
    special = [p.piece for p in proto.pieces
               if p.type in (kinds.CONTROL, kinds.UNKNOWN) or p.piece in ALBERT_SPECIALS]
    hf.add_special_tokens([tokenizers.AddedToken(t, normalized=False, special=True) for t in special])
    hf.add_tokens([tokenizers.AddedToken(p.piece, normalized=False) for p in proto.pieces
                   if p.type == kinds.USER_DEFINED and p.piece not in special])
    return hf
