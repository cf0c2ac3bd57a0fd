"""Subword tokenizers trained with HF `tokenizers`: BERT-style WordPiece, or byte BPE laid out like GPT-2's (decoders)
or RoBERTa's (encoders: <s> <pad> </s> <unk> <mask>).

A saved tokenizer is exactly the `tokenizer.json` that `tokenizers` writes; nothing else is
stored. Everything this wrapper adds is read back from token names: the model type gives the
kind, `[PAD]`/`<pad>`-style names give the special ids, and `<extra_id_k>` tokens sitting at
id vocab_size-1-k are the T5 sentinels. So any tokenizer.json that follows these names (for
example BERT's own) loads too.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from etils import epath
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

# Special tokens by kind, in id order from 0; the roles name the Tokenizer properties. Every role listed is required.
SPECIAL_TOKENS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "bpe": {"pad": "<pad>", "eos": "<eos>", "unk": "<unk>"},
    "unigram": {"pad": "<pad>", "unk": "<unk>"},  # SentencePiece layouts (load only): T5's, ALBERT's
}
# A byte BPE for masked-LM encoders, in RoBERTa's id order (pad 1, so learned positions start at 2).
ENCODER_BPE_TOKENS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}
# Names that give a role in any kind, tried after the kind's own: RoBERTa's <s> </s> <mask>, ALBERT's
# [CLS] [SEP] [MASK], T5's </s>, GPT-2's single <|endoftext|>, which HF also makes its eos, unk and, by
# convention, its pad (after [SEP], [PAD] and [UNK]: DeBERTa v1's GPT-2 vocabulary holds both kinds), and DeBERTa
# v2/v3's SentencePiece [PAD] [UNK]. A tokenizer with no end-of-sequence token of its own ends sequences with [SEP].
RELEASED_NAMES = {"eos": ("</s>", "[SEP]", "<|endoftext|>"), "pad": ("[PAD]", "<|endoftext|>"),
                  "unk": ("[UNK]", "<|endoftext|>"), "cls": ("[CLS]", "<s>"), "sep": ("[SEP]", "</s>"),
                  "mask": ("[MASK]", "<mask>")}
_MODEL_KINDS = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}


def sentinel_token(k: int) -> str:
    """The name of the k-th T5 sentinel."""
    return f"<extra_id_{k}>"


class Tokenizer:
    """A trained HF tokenizer plus the special and sentinel ids the objectives need."""

    def __init__(self, hf: tokenizers.Tokenizer):
        kind = _MODEL_KINDS.get(type(hf.model).__name__)
        if kind is None:
            raise ValueError(
                f"unsupported tokenizer model {type(hf.model).__name__}; expected WordPiece, BPE or Unigram"
            )
        required = SPECIAL_TOKENS[kind]
        ids = {role: _first_id(hf, ((required[role],) if role in required else ()) + RELEASED_NAMES.get(role, ()))
               for role in {**required, **RELEASED_NAMES}}
        missing = [token for role, token in required.items() if ids[role] is None]
        if missing:
            raise ValueError(f"{kind} tokenizer lacks the special tokens {missing}")
        if ids["eos"] is None:
            raise ValueError(f"{kind} tokenizer has no end-of-sequence token (</s>, <|endoftext|> or [SEP])")
        self.hf = hf
        self.kind = kind
        self._ids = ids
        size = self.vocab_size
        self.num_sentinels = 0
        while hf.token_to_id(sentinel_token(self.num_sentinels)) == size - 1 - self.num_sentinels:
            self.num_sentinels += 1

    # ------------------------------------------------------------------ training and files

    @classmethod
    def train(
        cls, documents: Sequence[str], kind: str, vocab_size: int, num_sentinels: int = 0,
        lowercase: bool = True, encoder: bool = False,
    ) -> Tokenizer:
        """Train on `documents`: exactly `vocab_size` ids, the top `num_sentinels` reserved.

        `lowercase` picks uncased or cased WordPiece; byte-level BPE always keeps the text exactly, with GPT-2's
        special tokens or, `encoder`, RoBERTa's (ENCODER_BPE_TOKENS).
        """
        if kind not in _TRAINERS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; use one of {sorted(_TRAINERS)}")
        learned_size = vocab_size - num_sentinels
        options = {"lowercase": lowercase} if kind == "wordpiece" else {"encoder": encoder}
        hf = _TRAINERS[kind](documents, learned_size, **options)
        trained = hf.get_vocab_size()
        if trained > learned_size:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: with {num_sentinels} sentinels the "
                f"{kind} alphabet and special tokens alone need {trained + num_sentinels}"
            )
        hf.add_special_tokens(
            [f"<unused_{i}>" for i in range(learned_size - trained)]
            + [sentinel_token(k) for k in reversed(range(num_sentinels))]
        )
        tokenizer = cls(hf)
        if tokenizer.vocab_size != vocab_size or tokenizer.num_sentinels != num_sentinels:
            raise ValueError("reserved token names collide with learned tokens; rename them")
        return tokenizer

    def save(self, path: str | os.PathLike) -> None:
        """Write the HF tokenizer.json (the only file; see the module docstring), locally or to gs://."""
        epath.Path(path).write_text(self.hf.to_str(pretty=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(epath.Path(path).read_text()))

    # ------------------------------------------------------------------ ids

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._ids["pad"]

    @property
    def unk_id(self) -> int:
        return self._ids["unk"]

    @property
    def cls_id(self) -> int | None:
        """[CLS] or <s>; None for GPT-2-style BPE, which has neither."""
        return self._ids["cls"]

    @property
    def sep_id(self) -> int | None:
        """[SEP] or </s>; None for GPT-2-style BPE."""
        return self._ids["sep"]

    @property
    def mask_id(self) -> int | None:
        """[MASK] or <mask>; None for GPT-2-style BPE and T5's SentencePiece."""
        return self._ids["mask"]

    @property
    def eos_id(self) -> int:
        """End of sequence (and BOS for GPT-2-style BPE); WordPiece uses [SEP]."""
        return self._ids["eos"]

    @property
    def special_ids(self) -> frozenset[int]:
        """Every id registered as special: named specials, sentinels and unused padding ids."""
        return frozenset(
            i for i, token in self.hf.get_added_tokens_decoder().items() if token.special
        )

    @functools.cached_property
    def continuation_ids(self) -> np.ndarray:
        """Sorted ids of the tokens that continue a word rather than begin one (whole-word and n-gram masking):
        WordPiece's '##' pieces, SentencePiece pieces without '▁', byte-BPE tokens without 'Ġ' (so a
        text's first word, which has no space before it, reads as continuing: BPE word boundaries are
        approximate)."""
        special = self.special_ids
        if self.kind == "wordpiece":
            continues = lambda token: token.startswith("##")  # noqa: E731
        else:
            marker = "▁" if self.kind == "unigram" else "Ġ"
            continues = lambda token: not token.startswith(marker)  # noqa: E731
        return np.array(sorted(i for token, i in self.hf.get_vocab(with_added_tokens=True).items()
                               if i not in special and continues(token)), np.int32)

    def sentinel_id(self, k: int) -> int:
        """Id of <extra_id_k>: vocab_size-1-k, counting down from the top like T5."""
        if not 0 <= k < self.num_sentinels:
            raise IndexError(f"sentinel {k} out of range: this vocab has {self.num_sentinels}")
        return self.vocab_size - 1 - k

    # ------------------------------------------------------------------ text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, dropping pad; other special tokens are shown by name."""
        kept = [int(i) for i in ids if int(i) != self.pad_id]
        return self.hf.decode(kept, skip_special_tokens=False)


def _first_id(hf: tokenizers.Tokenizer, names: Sequence[str]) -> int | None:
    """Id of the first of `names` in the vocabulary, or None."""
    return next((i for i in map(hf.token_to_id, names) if i is not None), None)


# ---------------------------------------------------------------------- trainers


def _train_wordpiece(
    documents: Sequence[str], vocab_size: int, lowercase: bool = True
) -> tokenizers.Tokenizer:
    """BERT's uncased (or cased) WordPiece, trained deterministically.

    `tokenizers` numbers the '##x' continuation tokens in hash-map order, which varies between
    processes and breaks merge ties differently (huggingface/tokenizers#1794). Declaring them
    up front as sorted special tokens fixes their ids; they are then made ordinary tokens again.
    """
    hf = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(cleanup=False)  # cleanup rewrites text ("do not" -> "don't")
    words = (
        word
        for document in documents
        for word, _ in hf.pre_tokenizer.pre_tokenize_str(hf.normalizer.normalize_str(document))
    )
    continuations = sorted({"##" + char for word in words for char in word[1:]})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS["wordpiece"].values()) + continuations,
        show_progress=False,
    )
    hf.train_from_iterator(documents, trainer)
    serialized = json.loads(hf.to_str())
    demoted = set(continuations)
    serialized["added_tokens"] = [
        t for t in serialized["added_tokens"] if t["content"] not in demoted
    ]
    return tokenizers.Tokenizer.from_str(json.dumps(serialized))


def _train_bpe(documents: Sequence[str], vocab_size: int, encoder: bool = False) -> tokenizers.Tokenizer:
    """GPT-2's byte-level BPE (RoBERTa's special tokens if `encoder`): every byte is in the alphabet, so any text
    round-trips exactly."""
    specials = ENCODER_BPE_TOKENS if encoder else SPECIAL_TOKENS["bpe"]
    hf = tokenizers.Tokenizer(models.BPE(unk_token=specials["unk"]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(documents, trainer)
    return hf


_TRAINERS = {"wordpiece": _train_wordpiece, "bpe": _train_bpe}
