"""seqio vocabularies for BERT (WordPiece), GPT-2 (byte BPE) and T5 (SentencePiece), plus training.

Every vocabulary here also carries the ids the objectives need (`cls_id`, `sep_id`, `mask_id`,
`special_ids`, sentinels), and follows one sentinel convention: `<extra_id_k>` is id
vocab_size-1-k, inside the vocabulary, so sentinels decode to their names everywhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf

from plmjax.data.corpus import split_sentences
from plmjax.data.tokenizer import Tokenizer, sentinel_token

T5_EXTRA_IDS = 100  # sentinels T5 adds to a SentencePiece model that has none of its own
FILE_NAMES = {"sentencepiece": "spm.model", "wordpiece": "tokenizer.json", "bpe": "tokenizer.json"}


class _Sentinels:
    """Sentinel lookup shared by the vocabularies: `<extra_id_k>` at id vocab_size-1-k."""

    num_sentinels: int

    def sentinel_id(self, k: int) -> int:
        if not 0 <= k < self.num_sentinels:
            raise IndexError(f"sentinel {k} out of range: this vocab has {self.num_sentinels}")
        return self.vocab_size - 1 - k


class TokenizerVocabulary(_Sentinels, seqio.Vocabulary):
    """A plmjax `Tokenizer` (HF `tokenizers`) as a seqio vocabulary; TF ops call it via numpy."""

    expected_kind: str | None = None  # subclasses pin the tokenizer kind they accept

    def __init__(self, tokenizer: Tokenizer):
        if self.expected_kind and tokenizer.kind != self.expected_kind:
            raise ValueError(f"{type(self).__name__} needs a {self.expected_kind} tokenizer, not {tokenizer.kind}")
        super().__init__(extra_ids=0)
        self.tokenizer = tokenizer
        self.kind = tokenizer.kind
        self.num_sentinels = tokenizer.num_sentinels
        self._json = tokenizer.hf.to_str()

    # RoBERTa's pads with 1: fine where plmjax pads the rows (encoder features), refused where seqio does (with 0).
    pad_id = property(lambda self: self.tokenizer.pad_id)
    eos_id = property(lambda self: self.tokenizer.eos_id)
    unk_id = property(lambda self: self.tokenizer.unk_id)
    cls_id = property(lambda self: self.tokenizer.cls_id)
    sep_id = property(lambda self: self.tokenizer.sep_id)
    mask_id = property(lambda self: self.tokenizer.mask_id)
    special_ids = property(lambda self: self.tokenizer.special_ids)
    continuation_ids = property(lambda self: self.tokenizer.continuation_ids)
    _base_vocab_size = property(lambda self: self.tokenizer.vocab_size)

    def word_ids(self, text: str) -> list[int]:
        """For each token of `encode(text)`, the index of the word it belongs to (whole-word masking)."""
        return list(self.tokenizer.hf.encode(text, add_special_tokens=False).word_ids)

    def _encode(self, s: str) -> Sequence[int]:
        return self.tokenizer.encode(s)

    def _decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(ids)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        """int32 ids of a string scalar, or a RaggedTensor of them for a vector of strings."""
        if s.shape.rank not in (0, 1):
            raise ValueError(f"encode_tf takes a string scalar or vector, got shape {s.shape}")
        values, lengths = tf.numpy_function(
            self._encode_strings, [tf.reshape(s, [-1])], (tf.int32, tf.int64), stateful=False
        )
        values.set_shape([None])
        return values if s.shape.rank == 0 else tf.RaggedTensor.from_row_lengths(values, lengths)

    def _encode_strings(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat ids and per-text lengths; text that is not UTF-8 is an error, never skipped."""
        decoded = []
        for raw in texts:
            try:
                decoded.append(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ValueError(f"text is not valid UTF-8 ({error}): {raw[:80]!r}") from None
        encoded = self.tokenizer.encode_batch(decoded)
        flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int32)
        return flat, np.array([len(ids) for ids in encoded], dtype=np.int64)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        """Strings of a 1-d (scalar out) or 2-d (vector out) id tensor."""
        decoded = tf.numpy_function(
            lambda rows: np.array([self._decode(r).encode() for r in rows.reshape(-1, rows.shape[-1])], object),
            [ids], tf.string, stateful=False,
        )
        return tf.reshape(decoded, tf.shape(ids)[:-1])

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self._json)

    def __str__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind}, vocab_size={self.vocab_size})"


class WordPieceVocabulary(TokenizerVocabulary):
    """BERT-family WordPiece (uncased or cased) with [PAD] [UNK] [CLS] [SEP] [MASK]; EOS is [SEP]."""

    expected_kind = "wordpiece"


class ByteBPEVocabulary(TokenizerVocabulary):
    """GPT-2-style byte-level BPE: any text round-trips exactly."""

    expected_kind = "bpe"


class SentencePieceVocabulary(_Sentinels, seqio.SentencePieceVocabulary):
    """T5's SentencePiece layout (pad 0, EOS 1, UNK 2); seqio appends `extra_ids` sentinels on top."""

    kind = "sentencepiece"
    cls_id = sep_id = mask_id = None

    def __init__(self, sentencepiece_model_file: str, extra_ids: int = 0):
        # tf_text's fast tokenizer agrees with the Python one where the default breaks ties differently
        super().__init__(sentencepiece_model_file, extra_ids=extra_ids, use_fast_tokenizer=True)
        sp = self.tokenizer
        if (sp.pad_id(), sp.eos_id()) != (seqio.vocabularies.PAD_ID, 1):
            raise ValueError(
                f"{sentencepiece_model_file}: plmjax needs T5's layout, pad id 0 and EOS id 1 "
                f"(this model has pad {sp.pad_id()}, EOS {sp.eos_id()})"
            )
        size, self.num_sentinels = sp.GetPieceSize(), 0
        while self.num_sentinels < size and sp.IdToPiece(size - 1 - self.num_sentinels).lstrip(
            "\u2581"  # seqio names its extra ids "▁<extra_id_k>"
        ) == sentinel_token(self.num_sentinels):
            self.num_sentinels += 1

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text (the corpus pipeline's Tokenizer interface)."""
        return self.tokenizer.EncodeAsIds(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` as HF's T5 tokenizer (a release's tokenizer.json) writes it, so a release reads the same
        whichever vocabulary file it ships: pad dropped; EOS, UNK and sentinels shown by name and glued to their
        neighbours (seqio's decode stops at EOS and spaces sentinels out); '▁' is a space, but not first."""
        sp, pieces = self.tokenizer, []
        first_sentinel = self.vocab_size - self.num_sentinels
        for i in map(int, ids):
            if i == self.pad_id:
                continue
            pieces.append(sentinel_token(self.vocab_size - 1 - i) if i >= first_sentinel else sp.IdToPiece(i))
        text = "".join(pieces).replace("▁", " ")
        return text[1:] if pieces and pieces[0].startswith("▁") else text

    @property
    def special_ids(self) -> frozenset[int]:
        """Control and unknown pieces (pad, EOS, UNK) and the sentinels."""
        sp = self.tokenizer
        named = {i for i in range(sp.GetPieceSize()) if sp.IsControl(i) or sp.IsUnknown(i)}
        return frozenset(named | {self.sentinel_id(k) for k in range(self.num_sentinels)})


# ---------------------------------------------------------------------- files


def from_tokenizer(tokenizer: Tokenizer) -> TokenizerVocabulary:
    """The vocabulary class for a tokenizer's kind (WordPiece, byte BPE, or the generic wrapper)."""
    classes = {"wordpiece": WordPieceVocabulary, "bpe": ByteBPEVocabulary}
    return classes.get(tokenizer.kind, TokenizerVocabulary)(tokenizer)


def load_vocabulary(path: str) -> TokenizerVocabulary | SentencePieceVocabulary:
    """A tokenizer.json, a SentencePiece .model (T5's 100 sentinels added if it has none), or a dir."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        names = sorted(set(FILE_NAMES.values()))
        found = [os.path.join(path, name) for name in names if os.path.exists(os.path.join(path, name))]
        if len(found) != 1:
            raise ValueError(f"vocabulary directory {path!r} must hold exactly one of {names}")
        path = found[0]
    if not os.path.isfile(path):
        raise ValueError(f"vocabulary {path!r} does not exist; train one with `plmjax vocab train`")
    if path.endswith(".json"):
        return from_tokenizer(Tokenizer.load(path))
    if path.endswith(".model"):
        vocabulary = SentencePieceVocabulary(path)
        return vocabulary if vocabulary.num_sentinels else SentencePieceVocabulary(path, T5_EXTRA_IDS)
    raise ValueError(f"vocabulary {path!r} is neither a tokenizer.json nor a SentencePiece .model")


def train_vocabulary(
    kind: str,
    documents: Sequence[str],
    vocab_size: int,
    out_dir: str,
    num_sentinels: int = 0,
    lowercase: bool = True,
) -> str:
    """Train a `kind` vocabulary of exactly `vocab_size` ids into `out_dir`; returns the file path."""
    if kind not in FILE_NAMES:
        raise ValueError(f"unknown vocabulary kind {kind!r}; use one of {sorted(FILE_NAMES)}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, FILE_NAMES[kind])
    if kind == "sentencepiece":
        _train_sentencepiece(documents, vocab_size, num_sentinels, path)
    else:
        Tokenizer.train(documents, kind, vocab_size, num_sentinels, lowercase=lowercase).save(path)
    return path


def _train_sentencepiece(documents: Sequence[str], vocab_size: int, num_sentinels: int, path: str) -> None:
    """A unigram model in T5's layout, the sentinels written into the file as its top pieces."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "spm")
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(s for document in documents for s in split_sentences(document)),
                model_prefix=prefix, vocab_size=vocab_size - num_sentinels, model_type="unigram",
                pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as error:
            raise ValueError(f"SentencePiece training failed for vocab_size={vocab_size}: {error}") from None
        with_sentinels = seqio.SentencePieceVocabulary(prefix + ".model", extra_ids=num_sentinels).sp_model
    with open(path, "wb") as f:
        f.write(with_sentinels)
