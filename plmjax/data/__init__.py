"""Text in, model-ready batches out: corpora, tokenizers, seqio vocabularies, tasks and batch sources.

Importing this package stays cheap: nothing here imports TensorFlow or seqio at module level.
`corpus`, `tokenizer`, `pipeline`, `registry` and `sources` never import them; `vocabularies`,
`seqio_source` and the task modules do, and are only imported once a seqio task or mixture is used.

The seqio half (issue #3), the API task modules build on:

vocabularies.py  seqio.Vocabulary subclasses; each also has the ids the objectives need:
                 kind, pad_id, eos_id, unk_id, cls_id / sep_id / mask_id (None when absent),
                 special_ids, num_sentinels, sentinel_id(k) (= vocab_size - 1 - k), vocab_size.
    WordPieceVocabulary(tokenizer)      BERT family; word_ids(text) gives each token's word index
    ByteBPEVocabulary(tokenizer)        GPT-2 style byte-level BPE
    TokenizerVocabulary(tokenizer)      any other plmjax Tokenizer (their common base)
    SentencePieceVocabulary(path, extra_ids=0)  T5 layout; sentinels are `<extra_id_k>` top pieces
    from_tokenizer(tokenizer), load_vocabulary(path)  (tokenizer.json, .model, or a dir with one)
    train_vocabulary(kind, documents, vocab_size, out_dir, num_sentinels=0, lowercase=True) -> path

registry.py      the one place tasks and mixtures are registered (no TF import):
    register_task(name, build, batcher)              build(seqio_name, vocab) -> seqio.Task
    register_family(prefix, build, batcher, argument, default="")
                                                     'prefix:ARG'; build(seqio_name, vocab, arg)
    register_mixture(name, [(task_or_mixture, rate), ...])   components share one batcher
    names() -> sorted names (families shown as 'prefix:ARG')
    resolve(name, vocab) -> Resolved(provider, batcher): the seqio Task/Mixture built for vocab and
        added to seqio's registry (so seqio.get_mixture_or_task works), and its batcher factory.
    A batcher factory is `batcher(config, vocab) -> Batcher(sequence_length, finalize)`: the seqio
    sequence_length dict (features padded/trimmed to it), and `finalize(rows, rng) -> features`,
    applied to each batch of numpy rows with a generator keyed by (data.seed, step, split);
    objectives, label mapping etc. go there. Modules in registry.TASK_MODULES (add yours) are
    imported on first use. seqio splits are 'train' and 'validation' (the run's 'eval').

pretraining_tasks.py  {c4,pydoc}_{span_corruption,mlm,lm}, c4_*:TFDS_CONFIG, text_files_*:GLOB,
                 c4_pydoc_* mixtures; seqio_task(name, vocab, source, objective) and keep_text/pack.

sources.py       the trainer's dispatch (`plmjax train --mixture NAME` = --set data.mixture=NAME):
    build_vocabulary(config, workdir)    the run's tokenizer or seqio vocabulary
    make_source(config, vocab, split)    .batch(step) -> the step's global batch (numpy)
    config.data.mixture names a registered task or mixture -> seqio_source.SeqioSource (each process
    reads its shard, rows gathered); empty -> the step-keyed corpus pipeline (pipeline.py).
"""
