"""Where a run's batches come from: a registered seqio task/mixture (`data.mixture`) or the corpus.

`build_vocabulary` and `make_source` are what the trainer calls. With `data.mixture` empty they are
the corpus pipeline's (no TensorFlow); otherwise TensorFlow and seqio are imported here, lazily.
"""

from __future__ import annotations

from plmjax.config import Config
from plmjax.data import pipeline


def build_vocabulary(config: Config, workdir: str | None = None):
    """data.vocab (tokenizer.json or SentencePiece .model), else the pipeline's workdir tokenizer."""
    if not config.data.mixture:
        return pipeline.build_tokenizer(config, workdir)
    from plmjax.data import vocabularies

    if config.data.vocab:
        return vocabularies.load_vocabulary(config.data.vocab)
    return vocabularies.from_tokenizer(pipeline.build_tokenizer(config, workdir))


def make_source(config: Config, vocabulary, split: str):
    """An object whose `batch(step)` is the model features of `split` at `step` (a pure function)."""
    if config.data.task_file:
        from plmjax.data import task_files

        return task_files.make_source(config, vocabulary, split)
    if not config.data.mixture:
        return pipeline.make_source(config, vocabulary, split)
    from plmjax.data import registry, seqio_source

    if vocabulary.vocab_size > config.model.vocab_size:
        raise ValueError(
            f"the vocabulary has {vocabulary.vocab_size} ids but model.vocab_size={config.model.vocab_size}"
        )
    provider, batcher = registry.resolve(config.data.mixture, vocabulary)
    return seqio_source.SeqioSource(
        config.data.mixture, provider, batcher(config, vocabulary), split=split,
        batch_size=config.data.batch_size, seed=config.data.seed, shard=seqio_source.process_shard(),
    )
