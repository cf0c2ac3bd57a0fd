"""GLUE: CoLA, SST-2, MRPC, QQP, STS-B, MNLI (matched, mismatched), QNLI, RTE, WNLI and the AX diagnostic.

Prompts and label names are T5's (fields in sorted order; AX is cast as MNLI); encoder rows are the
GLUE pairs in their TSV order. STS-B targets are the score rounded to 0.2 with one decimal.
"""

from __future__ import annotations

from plmjax.data import metrics
from plmjax.data.downstream import SUITES, Benchmark, Record, TextToText, add, label, on_values
from plmjax.data.encoding import PairClassification, fields
from plmjax.data.prompts import classification_task, t5_prompt

NLI = ("entailment", "not_entailment")
MNLI = ("entailment", "neutral", "contradiction")

# tfds config, also the prompt's benchmark name: (prompt fields, encoder pair (a, b or None), label names, metric)
_CLASSIFICATION = {
    "cola": (("sentence",), ("sentence", None), ("unacceptable", "acceptable"), metrics.matthews_corr),
    "sst2": (("sentence",), ("sentence", None), ("negative", "positive"), metrics.accuracy),
    "mrpc": (("sentence1", "sentence2"), ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             metrics.f1_and_accuracy),
    "qqp": (("question1", "question2"), ("question1", "question2"), ("not_duplicate", "duplicate"),
            metrics.f1_and_accuracy),
    "mnli": (("hypothesis", "premise"), ("premise", "hypothesis"), MNLI, metrics.accuracy),
    "qnli": (("question", "sentence"), ("question", "sentence"), NLI, metrics.accuracy),
    "rte": (("sentence1", "sentence2"), ("sentence1", "sentence2"), NLI, metrics.accuracy),
    "wnli": (("sentence1", "sentence2"), ("sentence1", "sentence2"), ("not_entailment", "entailment"),
             metrics.accuracy),
}
# Evaluated name: (tfds config, eval split).
_EVALUATED = {
    "cola": ("cola", "validation"), "sst2": ("sst2", "validation"), "mrpc": ("mrpc", "validation"),
    "qqp": ("qqp", "validation"), "mnli": ("mnli", "validation_matched"),
    "mnli_matched": ("mnli", "validation_matched"), "mnli_mismatched": ("mnli", "validation_mismatched"),
    "qnli": ("qnli", "validation"), "rte": ("rte", "validation"), "wnli": ("wnli", "validation"),
}


def _add_classification(name: str, config: str, eval_data: tuple[str, str], train: bool, metric=None) -> None:
    keys, (a, b), names, task_metric = _CLASSIFICATION[config]
    add(classification_task(
        name=f"glue_{name}", eval_data=eval_data, train_data=(f"glue/{config}", "train") if train else None,
        prompt=t5_prompt(config, keys), names=names,
        features=PairClassification(fields(a, b), label, len(names)),
        metric=on_values(metric or task_metric), train_instead="" if train else f"glue_{config}",
    ))


def stsb_target(score: float) -> str:
    """T5's STS-B target: the score rounded to the nearest 0.2, one decimal ("3.8")."""
    return f"{round(score * 5) / 5:.1f}"


def parse_float(text: str, record: Record, canonical) -> float:
    """Generated text -> a float, ignoring spaces a decoder puts around '.'; -1 if it is none."""
    try:
        return float(text.replace(" ", ""))
    except ValueError:
        return -1.0


def _check_score(record: Record) -> None:
    if not 0.0 <= record["label"] <= 5.0:
        raise ValueError(f"STS-B score {record['label']!r} is outside [0, 5]")


def _stsb() -> Benchmark:
    return Benchmark(
        name="glue_stsb", eval_data=("glue/stsb", "validation"), train_data=("glue/stsb", "train"),
        gold=label, metric=on_values(metrics.pearson_spearman),
        text_to_text=TextToText(prompt=t5_prompt("stsb", ("sentence1", "sentence2")),
                                targets=lambda r: [stsb_target(r["label"])], parse=parse_float),
        features=PairClassification(fields("sentence1", "sentence2"), label, num_labels=1),
        check=_check_score,
    )


for _name, (_config, _split) in _EVALUATED.items():
    _add_classification(_name, _config, (f"glue/{_config}", _split), train=True)
# AX, the diagnostic: MNLI's format and model, a test split only, scored by (3-class) Matthews correlation.
_add_classification("ax", "mnli", ("glue/ax", "test"), train=False, metric=metrics.matthews_corr)
add(_stsb())
SUITES["glue"] = tuple(name for names in metrics.GLUE_SCORE_TASKS.values() for name in names)
