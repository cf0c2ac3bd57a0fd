"""The `plmjax` command: train, eval, decode, convert, embed, tasks, vocab and compile."""

from __future__ import annotations

import argparse
import os
import sys

from plmjax import plugins
from plmjax.config import ConfigError, apply_overrides, load_config, valid_keys
from plmjax.cpu_tuning import tune_cpu_process


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.num_steps=50 --set mesh.model=2 (repeatable)",
    )
    parser.add_argument(
        "--plugin", dest="plugins", action="append", default=[], metavar="MODULE|FILE.py",
        help="import a module or .py file that registers kinds (objectives, attention kernels, masks, ...) "
             "before the config is read; a run records its plug-ins in config.json (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plmjax",
        description="Pretrained language models in JAX/Flax: pretrain, evaluate, decode, convert released "
                    "checkpoints and embed text.",
        epilog="Config keys for --set: " + ", ".join(valid_keys()),
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    train = verbs.add_parser("train", help="pretrain a model from a config file (resumes from WORKDIR if it has checkpoints)")
    train.add_argument("--config", help="a Python config file defining get_config(), e.g. configs/bert_tiny.py "
                       "(optional with --init_from: the checkpoint's own config)")
    train.add_argument("--workdir", required=True, help="where checkpoints, metrics.jsonl, TensorBoard logs and the tokenizer go")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--init_from", "--init-from", metavar="DIR",
                       help="start from a converted checkpoint's params (and vocabulary) when WORKDIR has no checkpoint")
    train.add_argument("--coordinator_address", "--coordinator-address", metavar="HOST:PORT",
                       help="multi-process run: process 0's address (with --num_processes, --process_id); "
                            "not needed on Cloud TPU, where the hosts of a slice find each other")
    train.add_argument("--num_processes", "--num-processes", type=int, metavar="N", help="processes in the run")
    train.add_argument("--process_id", "--process-id", type=int, metavar="I", help="this process, 0 .. N-1")
    train.add_argument("--mixture", dest="overrides", action="append", default=[], metavar="NAME",  # as --set's
                       type=lambda name: f"data.mixture={name}",
                       help="read batches from a registered seqio task or mixture (see `plmjax tasks`); "
                            "same as --set data.mixture=NAME")
    train.add_argument("--task", metavar="NAME|FILE.json",
                       help="fine-tune on a task file of your own data (FILE.json: kind, files, columns; see "
                            "plmjax/data/task_files.py), or on a benchmark (glue_rte, superglue_record, squad_v1, ...) "
                            "in the format and with the head the model needs, or, text-to-text, on a suite (glue, "
                            "superglue); ends with its scores. Other names: as --mixture")
    _add_overrides(train)

    evaluate = verbs.add_parser("eval", help="evaluate the latest checkpoint of a training run on its eval split")
    evaluate.add_argument("--workdir", "--checkpoint", dest="workdir", required=True, help=CHECKPOINT_HELP)
    evaluate.add_argument("--mode", choices=("loss", "fewshot", "perplexity"), default="loss",
                          help="loss: the pretraining loss on the eval split; fewshot: multiple choice by LM "
                               "log-likelihood; perplexity: of --data text files (default: the eval split)")
    evaluate.add_argument("--data", default="", help='fewshot: a JSON-lines file of {"context", "choices", "label"}; '
                                                     "perplexity: a text file glob")
    evaluate.add_argument("--shots", type=int, default=0, help="fewshot: in-context examples before each question")
    evaluate.add_argument("--length-normalize", action="store_true", help="fewshot: score choices per token")
    evaluate.add_argument("--seed", type=int, default=0, help="fewshot: which examples prime each question")
    evaluate.add_argument("--task", metavar="NAME|FILE.json",
                          help="scores on a task file of your own data (read with the labels the run was trained on), "
                               "or official scores on a benchmark (glue_rte, squad_v2, ...) or suite (glue, superglue; "
                               "from CHECKPOINT/<task> where it exists): a table, also written to "
                               "CHECKPOINT/eval_NAME.json and .md")
    evaluate.add_argument("--split", default="validation", choices=("validation", "test"),
                          help="with --task FILE.json: the split of the task file to score")
    _add_overrides(evaluate)

    decode = verbs.add_parser("decode", help="generate text from a trained decoder-only or encoder-decoder run")
    decode.add_argument("--workdir", "--checkpoint", dest="workdir", required=True, help=CHECKPOINT_HELP)
    decode.add_argument("--prompt", action="append", default=[], help="input text (repeatable)")
    decode.add_argument("--input", help="a file with one input text per line")
    decode.add_argument("--method", choices=("greedy", "beam", "sample"), default="greedy")
    decode.add_argument("--max-new-tokens", type=int, default=32)
    decode.add_argument("--num-beams", type=int, default=4)
    decode.add_argument("--length-penalty", type=float, default=1.0)
    decode.add_argument("--temperature", type=float, default=1.0)
    decode.add_argument("--top-k", type=int, default=0)
    decode.add_argument("--top-p", type=float, default=1.0)
    decode.add_argument("--seed", type=int, default=0)
    _add_overrides(decode)

    convert = verbs.add_parser("convert", help="released weights -> a plmjax checkpoint directory, or one back to HF")
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source_kind", metavar="KIND",
                           help="hf (config.json + model.safetensors / pytorch_model.bin), tf1 (Google's BERT "
                                "bert_model.ckpt + bert_config.json) or t5x (an orbax T5X checkpoint)")
    direction.add_argument("--to", dest="target_kind", choices=("hf",), help="export a plmjax directory to HF format")
    convert.add_argument("source", help="the release directory (or TF1 checkpoint prefix); with --to, a converted "
                                        "checkpoint or a training workdir")
    convert.add_argument("--out", required=True, help="the directory to write")
    convert.add_argument("--no-tokenizer", action="store_true", help="do not convert the release's vocabulary")
    _add_overrides(convert)

    embed = verbs.add_parser("embed", help="sentence embeddings from an encoder: one vector per input line")
    embed.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    embed.add_argument("--input", required=True, help="a text file, one text per line")
    embed.add_argument("--out", required=True, help="the .npy file to write: float32 [num_texts, hidden]")
    embed.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="over real tokens (default), or [CLS]")
    embed.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: L2-normalised)")
    embed.add_argument("--max-length", type=int, default=0, help="tokens per text with specials; 0: data.seq_length")
    embed.add_argument("--batch-size", type=int, default=32)
    _add_overrides(embed)

    predict = verbs.add_parser("predict", help="predictions of a run trained on a task file (`train --task FILE.json`) "
                               "for the rows of a file in that task's format: one JSON line per row, in order")
    predict.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    predict.add_argument("--input", required=True, help="rows in the task's format (labels optional)")
    predict.add_argument("--out", required=True, help="the JSON-lines file to write")
    _add_overrides(predict)

    verbs.add_parser("tasks", help="list the registered seqio tasks and mixtures, one per line (for --mixture)")

    vocab = verbs.add_parser("vocab", help="vocabularies: `plmjax vocab train ...`")
    vocab_train = vocab.add_subparsers(dest="vocab_verb", required=True, metavar="ACTION").add_parser(
        "train", help="train a WordPiece, SentencePiece or byte-level BPE vocabulary on text files")
    vocab_train.add_argument("--kind", required=True, choices=("wordpiece", "sentencepiece", "bpe"))
    vocab_train.add_argument("--corpus", required=True, nargs="+", metavar="FILES",
                             help="UTF-8 text files or globs (blank lines separate documents), or 'pydoc'")
    vocab_train.add_argument("--size", required=True, type=int, metavar="N", help="ids in the vocabulary, sentinels included")
    vocab_train.add_argument("--out", required=True, metavar="DIR", help="writes DIR/tokenizer.json or DIR/spm.model")
    vocab_train.add_argument("--sentinels", type=int, metavar="K",
                             help="T5 sentinels <extra_id_k> at the top ids (default: 100 for sentencepiece, else 0)")
    vocab_train.add_argument("--cased", action="store_true", help="wordpiece: keep case (default: uncased)")

    compile_ = verbs.add_parser("compile", help="compile the train step for a TPU slice on this machine (no weights): "
                                "per-chip HBM, whether it fits, FLOPs and estimated MFU; exit status 1 if it does not fit")
    compile_.add_argument("--config", required=True, help="a Python config file defining get_config()")
    compile_.add_argument("--topology", required=True, help="a TPU slice: v5p:4x4x4, v4:2x2x2, v5e:4x4, v6e:2x2, ...")
    compile_.add_argument("--json", action="store_true", help="print the report as one JSON object")
    _add_overrides(compile_)
    return parser


CHECKPOINT_HELP = "a training run's workdir (its latest checkpoint) or a `plmjax convert` output directory"


def _trainer_with_params(directory: str, overrides: list[str]):
    """A Trainer for the directory's config, and only the params of its checkpoint (in their shards)."""
    from plmjax.convert import directory as checkpoint_dir
    from plmjax.training.trainer import Trainer

    config = checkpoint_dir.read_config(directory, overrides)
    converted = checkpoint_dir.is_converted(directory)
    if converted:  # never let the Trainer train a vocabulary for released weights
        checkpoint_dir.load_tokenizer(directory, config)
    trainer = Trainer(config, directory, progress=False)
    if converted:
        return trainer, *checkpoint_dir.restore_params(directory, trainer.abstract_state.params)
    step = trainer.checkpointer.latest_step()
    if step is None:
        raise ConfigError(f"no checkpoint in {directory!r}: train into it first")
    return trainer, trainer.restore_params(step), step


def _train_config(args):
    if args.init_from:
        from plmjax.convert import directory as checkpoint_dir

        base = (load_config(args.config, args.overrides, args.plugins) if args.config
                else apply_overrides(checkpoint_dir.read_config(args.init_from, args.overrides), [], args.plugins))
        return checkpoint_dir.init_config(base, args.init_from)
    if not args.config:
        raise ConfigError("train needs --config FILE (or --init_from DIR)")
    return load_config(args.config, args.overrides, args.plugins)


def cmd_train(args) -> None:
    from plmjax import distributed
    from plmjax.training.trainer import Preempted, Trainer, TrainingError

    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    config = _with_task(_train_config(args), args.task, args.workdir)
    trainer = Trainer(config, args.workdir, progress=not args.no_progress)
    try:
        final = trainer.run()
    except TrainingError as error:
        raise SystemExit(f"plmjax train: error: {error}") from None
    except Preempted as stop:
        print(f"plmjax train: {stop}", file=sys.stderr)
        return
    finally:
        trainer.close()
    print(f"eval step {config.train.num_steps}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(final.items())))
    if args.task and (_is_downstream(args.task) or _is_task_file(args.task)):
        import jax

        if jax.process_index() == 0:
            _report_downstream(args.workdir, os.path.join(args.workdir, "task.json") if _is_task_file(args.task)
                               else args.task, [])


def _is_downstream(name: str) -> bool:
    from plmjax.data import downstream

    return downstream.parse(name) is not None


def _is_task_file(name: str) -> bool:
    return name.endswith(".json")


def _with_task(config, name: str | None, workdir: str):
    """`config` set to train on `name`: a task file's data and head, a benchmark's format and head, or any
    registered task/mixture."""
    if not name:
        return config
    if _is_task_file(name):
        from plmjax.data import task_files

        return task_files.configure(config, name, workdir)
    if _is_downstream(name):
        from plmjax.models.finetuning import finetuning_config

        return finetuning_config(config, name)
    return apply_overrides(config, [f"data.mixture={name}"])


def _report_downstream(checkpoint: str, name: str, overrides: list[str], split: str = "validation") -> None:
    """Print a checkpoint's scores on a task file or a benchmark `name` and write them next to it."""
    if _is_task_file(name):
        from plmjax.evaluation import task_files

        same = os.path.abspath(name) == os.path.join(os.path.abspath(checkpoint), "task.json")
        report = task_files.evaluate(checkpoint, None if same else name, split, overrides)
    else:
        from plmjax.evaluation.downstream import evaluate

        report = evaluate(checkpoint, name, overrides)
    print(report.text())
    print("wrote " + ", ".join(report.write(checkpoint)))


def cmd_eval(args) -> None:
    if args.task:
        if args.mode != "loss":
            raise ConfigError(f"--task scores task files and benchmarks; it does not combine with --mode {args.mode}")
        _report_downstream(args.workdir, args.task, args.overrides, args.split)
        return
    trainer, params, step = _trainer_with_params(args.workdir, args.overrides)
    if args.mode == "loss":
        metrics = trainer.evaluate(params)
    else:
        from plmjax.evaluation import fewshot

        metrics = fewshot.evaluate(args.mode, trainer.config, trainer.task.module, params, trainer.tokenizer,
                                   trainer.mesh, args.data, args.shots, args.length_normalize, args.seed)
    trainer.metrics.write(step, metrics, prefix="eval_")
    trainer.close()
    width = max(len(k) for k in metrics)
    print(f"eval of {args.workdir} at step {step}")
    for key, value in sorted(metrics.items()):
        print(f"  {key:<{width}}  {value:.4f}")


def cmd_decode(args) -> None:
    import jax
    import numpy as np

    from plmjax import decoding
    from plmjax.convert import directory as checkpoint_dir

    texts = list(args.prompt)
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ConfigError("decode needs --prompt TEXT or --input FILE")
    if checkpoint_dir.read_config(args.workdir, args.overrides).model.arch == "encoder":
        raise ConfigError("decode needs a decoder-only or encoder-decoder model; this run is an encoder")
    loaded = checkpoint_dir.load(args.workdir, args.overrides)
    config, tokenizer, params, module = loaded.config, loaded.tokenizer, loaded.params, loaded.module()
    for text in texts:
        ids = np.asarray([tokenizer.encode(text)], np.int32)
        if config.model.arch == "encoder_decoder":
            ids = np.concatenate([ids, [[tokenizer.eos_id]]], axis=1)
        out = decoding.generate(
            module, params, ids, method=args.method, max_new_tokens=args.max_new_tokens,
            eos_id=tokenizer.eos_id, num_beams=args.num_beams, length_penalty=args.length_penalty,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, rng=jax.random.key(args.seed),
        )
        generated = tokenizer.decode([int(t) for t in np.asarray(out)[0]])
        print(f"{_one_line(text)}\t{_one_line(generated)}")


def cmd_convert(args) -> None:
    from plmjax.convert import release

    if args.target_kind:
        model_type = release.export_hf(args.source, args.out, args.overrides)
        generator = os.path.join(args.out, release.GENERATOR)
        also = f", and its generator to {generator}" if os.path.isdir(generator) else ""
        print(f"wrote HF {model_type} model to {args.out}{also}")
        return
    config = release.import_release(args.source, args.out, args.source_kind, args.overrides,
                                    with_tokenizer=not args.no_tokenizer)
    written = sorted(os.listdir(args.out))
    print(f"wrote {config.model.arch} checkpoint to {args.out}: {', '.join(written)}")
    if not args.no_tokenizer and not {"tokenizer.json", "spiece.model"} & set(written):
        print("note: no plmjax vocabulary (the release ships no tokenizer.json, vocab.txt or spiece.model); "
              "name one for eval, decode and embed with --set data.vocab=PATH", file=sys.stderr)


def cmd_embed(args) -> None:
    import numpy as np

    from plmjax import embed
    from plmjax.convert import directory as checkpoint_dir

    with open(args.input, encoding="utf-8") as f:
        texts = f.read().splitlines()
    loaded = checkpoint_dir.load(args.checkpoint, args.overrides)
    vectors = embed.embed(
        loaded.config.model, loaded.params["encoder"], loaded.tokenizer, texts,
        max_length=args.max_length or loaded.config.data.seq_length, pooling=args.pooling,
        normalize=not args.no_normalize, batch_size=args.batch_size,
    )
    np.save(args.out, vectors)
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 vectors to {args.out}")


def cmd_tasks(args) -> None:
    from plmjax.data import registry

    print("\n".join(registry.names()))


def cmd_vocab(args) -> None:
    from plmjax.data import vocabularies
    from plmjax.data.corpus import load_documents

    sentinels = args.sentinels if args.sentinels is not None else (
        vocabularies.T5_EXTRA_IDS if args.kind == "sentencepiece" else 0)
    documents = [doc for spec in args.corpus
                 for doc in load_documents(spec if spec == "pydoc" else f"text_files:{spec}")]
    path = vocabularies.train_vocabulary(args.kind, documents, args.size, args.out, sentinels, lowercase=not args.cased)
    vocabulary = vocabularies.load_vocabulary(path)
    print(f"wrote {path}: {args.kind}, {vocabulary.vocab_size} ids, {vocabulary.num_sentinels} sentinels")


def cmd_compile(args) -> int:
    import json

    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compiling for a slice must not claim this host's accelerators
    from plmjax import aot

    report = aot.compile_train_step(load_config(args.config, args.overrides, args.plugins), args.topology)
    print(json.dumps(report.to_dict()) if args.json else report.format())
    return 0 if report.fits else 1


def _one_line(text: str) -> str:
    """Escape line breaks and tabs so each input and its output stay on one tab-separated line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def cmd_predict(args) -> None:
    from plmjax.evaluation import task_files

    count = task_files.predict(args.checkpoint, args.input, args.out, args.overrides)
    print(f"wrote {count} predictions to {args.out}")


COMMANDS = {"predict": cmd_predict, "train": cmd_train, "eval": cmd_eval, "decode": cmd_decode, "convert": cmd_convert, "embed": cmd_embed,
            "tasks": cmd_tasks, "vocab": cmd_vocab, "compile": cmd_compile}


def main(argv: list[str] | None = None) -> int:
    try:
        tune_cpu_process()  # before JAX starts: see plmjax/cpu_tuning.py
    except ValueError as error:  # a PLMJAX_CPU_TUNING that is neither yes nor no
        raise SystemExit(f"plmjax: error: {error}") from None
    args = build_parser().parse_args(argv)
    try:
        plugins.load_all(getattr(args, "plugins", ()))
        return COMMANDS[args.verb](args) or 0  # a verb may return a non-zero exit status (compile: does not fit)
    except (ConfigError, ValueError) as error:
        print(f"plmjax {args.verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
