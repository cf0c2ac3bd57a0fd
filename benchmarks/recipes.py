"""Pretraining recipes against fine-tuning methods on real text, at this machine's scale.

    python benchmarks/recipes.py [--quick] [--rows mlm+full,...] [--tasks austen_novel,...] [--cache DIR]
                                 [--json OUT.json] [--markdown OUT.md]

A row is (pretraining recipe, fine-tuning method). Each recipe pretrains a bert_tiny-sized encoder per
language under one budget of training FLOPs (plmjax/flops.py: 3 x the forward pass's matmul FLOPs a step,
the same count for every recipe) on real text (English: Austen and the KJV, with the passages the tasks
evaluate on held out; Chinese: People's Daily), cached in --cache so rows can be added one at a time. Each
method then fine-tunes through `plmjax train --task` on every task (Chinese review sentiment, Austen
passage-to-novel attribution, fortunes topics; benchmarks/recipe_tasks.py) with all training rows and with
100 of them, for 3 seeds each, and `plmjax eval --split test` scores it. Figures are small-scale figures on
this CPU, not the papers' GLUE numbers. Later recipes and methods add themselves to RECIPES and METHODS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import recipe_tasks  # noqa: E402
import report  # noqa: E402

from plmjax import flops  # noqa: E402
from plmjax.cli import main as plmjax  # noqa: E402
from plmjax.config import load_config  # noqa: E402
from plmjax.training.trainer import Trainer  # noqa: E402

CONFIGS = os.path.join(HERE, "..", "configs")
LANGUAGES = {"chinese_sentiment": "chinese", "austen_novel": "english", "fortunes_topic": "english"}
VOCAB_SIZES = {"english": 4096, "chinese": 8192}  # Chinese: ~4.7k characters before any word piece


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A pretraining recipe: a tiny preset of configs/ (all bert_tiny's size) and overrides of it."""

    config: str
    overrides: tuple[str, ...]
    about: str


@dataclasses.dataclass(frozen=True)
class Method:
    """A fine-tuning method: overrides of the fine-tuning run (e.g. train.trainable for parameter-efficient ones)."""

    overrides: tuple[str, ...]
    about: str


RECIPES = {
    "mlm": Recipe("bert_tiny", ("objective.kind=mlm", "objective.mlm.nsp=false"), "BERT masked LM (15%), no NSP"),
    "roberta": Recipe("roberta_tiny", (), "RoBERTa: MLM on FULL-SENTENCES rows, byte-level BPE, AdamW beta2 0.98"),
    "albert": Recipe("albert_tiny", (), "ALBERT: E=64, shared layers, n-gram MLM + sentence order, LAMB"),
    "electra": Recipe("electra_tiny", (), "ELECTRA: replaced-token detection against a 1/4-width generator"),
    "deberta": Recipe("deberta_tiny", (), "DeBERTa: disentangled attention, MLM through the enhanced mask decoder"),
    "deberta_noemd": Recipe("deberta_tiny", ("model.mask_decoder_passes=0",),
                            "DeBERTa: disentangled attention, MLM from the last layer (no mask decoder)"),
}
METHODS = {
    "full": Method((), "every parameter trains"),
    "sift": Method(("objective.regularizers=sift", "objective.sift.weight=1.0"),
                   "full fine-tuning plus SiFT's adversarial term on the normalised embeddings"),
}


# Every recipe fully fine-tuned, and each method on the recipes it is compared on.
DEFAULT_ROWS = [f"{r}+full" for r in RECIPES] + ["mlm+sift", "deberta+sift"]


@dataclasses.dataclass(frozen=True)
class Plan:
    budget_flops: float  # training FLOPs of each pretraining run
    finetune_steps: int
    seeds: int
    low_data: int  # training rows of the low-data setting
    batch_size: int = 16
    seq_length: int = 128
    documents: int = 0  # pretraining documents used (0: all)


PLANS = {"quick": Plan(budget_flops=5e12, finetune_steps=120, seeds=3, low_data=100),
         "full": Plan(budget_flops=5e14, finetune_steps=400, seeds=3, low_data=100)}
TINY = Plan(budget_flops=2e10, finetune_steps=2, seeds=1, low_data=8, batch_size=4, seq_length=32, documents=40)


def _corpus(language: str, cache: str, documents: int = 0) -> str:
    """The recipe's pretraining text (its first `documents`, 0: all) as one file, blank lines between documents."""
    path = os.path.join(cache, "text", f"{language}_{documents or 'all'}.txt")
    if not os.path.exists(path):
        documents = recipe_tasks.pretraining_text(language)[0][: documents or None]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n\n".join(d.replace("\n\n", "\n") for d in documents))
        os.replace(path + ".tmp", path)
    return path


def pretrain(name: str, language: str, plan: Plan, cache: str) -> tuple[str, float]:
    """(workdir, training FLOPs) of recipe `name` pretrained on `language`; reused when cached."""
    workdir = os.path.join(cache, "pretrained", f"{name}_{language}_{plan.budget_flops:.0e}_{plan.seq_length}_"
                                                f"{plan.documents or 'all'}")
    recipe = RECIPES[name]
    config = os.path.join(CONFIGS, f"{recipe.config}.py")
    overrides = [*recipe.overrides, f"data.corpus=text_files:{_corpus(language, cache, plan.documents)}",
                 f"data.seq_length={plan.seq_length}", f"data.batch_size={plan.batch_size}", "mesh.data=1",
                 f"model.vocab_size={VOCAB_SIZES[language]}",
                 "train.eval_every=0", "train.checkpoint_every=0", "train.eval_steps=2"]
    probe = Trainer(load_config(config, overrides + ["train.num_steps=1"]), workdir, progress=False)  # trains nothing
    with probe.context():  # mesh, axis rules and runtime settings while the step is traced for its FLOPs
        step_flops = flops.TRAIN_FACTOR * flops.forward_flops(lambda p, b: probe.task.loss(p, b)[0],
                                                              probe.abstract_state.params, probe.example)
    done = probe.checkpointer.latest_step() is not None
    probe.close()
    steps = max(1, int(plan.budget_flops // step_flops))
    if not done:  # the tokenizer the probe trained (WORKDIR/tokenizer.json) is reused
        trainer = Trainer(load_config(config, overrides + [f"train.num_steps={steps}"]), workdir)
        try:
            trainer.run()
        finally:
            trainer.close()
    return workdir, steps * step_flops


def finetune(pretrained: str, task_json: str, method: str, seed: int, plan: Plan, workdir: str) -> dict[str, float]:
    """Test-split metrics of one fine-tuning run (cached in workdir): AdamW for every recipe, as the papers fine-tune
    (ALBERT pretrains with LAMB, whose steps scale with each weight's norm and barely move a fresh head)."""
    report = os.path.join(workdir, "eval_test.json")
    if not os.path.exists(report):
        args = ["--set", f"train.num_steps={plan.finetune_steps}", "--set", f"train.seed={seed}",
                "--set", f"data.seed={seed}", "--set", f"data.batch_size={plan.batch_size}",
                "--set", "optimizer.kind=adamw", "--set", "optimizer.learning_rate=3e-4",
                "--set", f"optimizer.warmup_steps={plan.finetune_steps // 10}",
                "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0", "--set", "train.eval_steps=2"]
        for override in METHODS[method].overrides:
            args += ["--set", override]
        if plmjax(["train", "--init_from", pretrained, "--workdir", workdir, "--task", task_json, "--no-progress",
                   *args]) != 0:
            raise RuntimeError(f"fine-tuning {workdir} failed")
        if plmjax(["eval", "--checkpoint", workdir, "--task", os.path.join(workdir, "task.json"), "--split", "test"]):
            raise RuntimeError(f"evaluating {workdir} failed")
    return next(iter(json.load(open(report))["tasks"].values()))


def trainable_parameters(workdir: str) -> int:
    """How many parameters a fine-tuning run trained: what its checkpoint stores (trainable-only runs store those)."""
    import math

    from plmjax.training.checkpoints import Checkpointer

    with Checkpointer(os.path.join(workdir, "checkpoints")) as checkpointer:
        shapes = checkpointer.shapes(checkpointer.latest_step())
    return sum(math.prod(shape) for path, shape in shapes.items() if path.startswith("params/"))


def run(rows: list[str], tasks: list[str], plan: Plan, cache: str) -> list[dict]:
    """One record per (row, task, setting): mean and std over seeds of each test metric, parameters, FLOPs."""
    records = []
    for row in rows:
        recipe, method = row.split("+")
        for task in tasks:
            start = time.perf_counter()
            pretrained, budget = pretrain(recipe, LANGUAGES[task], plan, cache)
            full = recipe_tasks.build(task, os.path.join(cache, "tasks"))
            settings = {"full": full, f"n{plan.low_data}": recipe_tasks.low_data(full, plan.low_data)}
            for setting, task_json in settings.items():
                runs = [finetune(pretrained, task_json, method, seed, plan,
                                 os.path.join(cache, "finetuned", f"{row}_{task}_{setting}_{plan.finetune_steps}_s{seed}"))
                        for seed in range(plan.seeds)]
                last = os.path.join(cache, "finetuned", f"{row}_{task}_{setting}_{plan.finetune_steps}_s{plan.seeds - 1}")
                records.append({"row": row, "task": task, "setting": setting, "seeds": plan.seeds,
                                "pretraining_flops": budget, "trainable_parameters": trainable_parameters(last),
                                "metrics": {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))]
                                            for k in runs[0]},
                                "seconds": time.perf_counter() - start})
                print(f"{row} {task} {setting}: " + ", ".join(f"{k} {m:.1f} ± {s:.1f}"
                                                              for k, (m, s) in records[-1]["metrics"].items()),
                      file=sys.stderr, flush=True)
    return records


def markdown(records: list[dict], metric: str = "accuracy") -> str:
    """The table: a line per row and setting, a column per task (mean ± std of `metric` over seeds)."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    lines = [f"| row | setting | {' | '.join(tasks)} | trainable params | pretraining FLOPs |",
             "|---|---|" + "---:|" * (len(tasks) + 2)]
    for row in dict.fromkeys(r["row"] for r in records):
        for setting in dict.fromkeys(r["setting"] for r in records):
            cells = {r["task"]: r for r in records if r["row"] == row and r["setting"] == setting}
            if not cells:
                continue
            first = next(iter(cells.values()))
            scores = [f"{cells[t]['metrics'][metric][0]:.1f} ± {cells[t]['metrics'][metric][1]:.1f}" if t in cells
                      else "–" for t in tasks]
            lines.append(f"| {row} | {setting} | {' | '.join(scores)} | {first['trainable_parameters']:,} | "
                         f"{first['pretraining_flops']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, plan: Plan | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small plan (under 20 minutes on 2 cores)")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated recipe+method rows")
    parser.add_argument("--tasks", default=",".join(LANGUAGES), help="comma-separated task names")
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "plmjax", "recipes"))
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    rows, tasks = args.rows.split(","), args.tasks.split(",")
    for row in rows:
        recipe, _, method = row.partition("+")
        if recipe not in RECIPES or method not in METHODS:
            parser.error(f"row {row!r} is not RECIPE+METHOD of {', '.join(RECIPES)} and {', '.join(METHODS)}")
    unknown = [t for t in tasks if t not in LANGUAGES]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(LANGUAGES)}")
    plan = plan or PLANS["quick" if args.quick else "full"]
    records = run(rows, tasks, plan, args.cache)
    table = markdown(records)
    print(table)
    report.write(records, table, args.json, args.markdown)
    return records


if __name__ == "__main__":
    main()
