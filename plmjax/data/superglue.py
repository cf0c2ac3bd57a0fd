"""SuperGLUE: BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC and the AX-b / AX-g diagnostics.

Prompts are T5's (fields in sorted order unless T5 fixes them; MultiRC without HTML; WSC with
`* noun *` and `# pronoun #` marked; AX-b and AX-g cast as RTE). Encoder rows: BoolQ (question,
passage); CB, RTE, AX-g (premise, hypothesis); AX-b (sentence1, sentence2); COPA a choice per
premise joined by "because" (cause) or "so" (effect); MultiRC (question answer, paragraph); WiC
("word: sentence1", sentence2); WSC the marked text; ReCoRD a row per candidate entity, the query
with @placeholder filled in, the entity with the largest answer logit margin predicted.
"""

from __future__ import annotations

import re

from plmjax.data import metrics
from plmjax.data.downstream import SUITES, Benchmark, Record, TextToText, add, label, on_values
from plmjax.data.encoding import CandidateScoring, MultipleChoice, PairClassification, fields
from plmjax.data.prompts import classification_task, t5_prompt

BOOL = ("False", "True")
NLI = ("entailment", "not_entailment")
CONNECTIVES = {"cause": "because", "effect": "so"}


def _data(config: str, split: str = "validation") -> tuple[str, str]:
    return (f"super_glue/{config}", split)


def _add(name: str, keys: tuple[str, ...], names: tuple[str, ...], features, metric, config: str = "",
         prompt=None, check=None) -> None:
    """A label-classification task on super_glue/<config or name>, trained on its train split."""
    config = config or name
    add(classification_task(
        name=f"superglue_{name}", eval_data=_data(config), train_data=_data(config, "train"),
        prompt=prompt or t5_prompt(name, keys), names=names, features=features, metric=metric, check=check))


# ---------------------------------------------------------------- COPA


def _check_copa(record: Record) -> None:
    if record["question"] not in CONNECTIVES:
        raise ValueError(f"COPA question {record['question']!r} is neither 'cause' nor 'effect'")


def _copa_choices(record: Record) -> list[tuple[str, str]]:
    connective = CONNECTIVES[record["question"]]
    return [(record["premise"], f"{connective} {record[key]}") for key in ("choice1", "choice2")]


# ---------------------------------------------------------------- MultiRC


def clean_paragraph(text: str) -> str:
    """MultiRC paragraphs without their HTML: <br> becomes a space, <b> and </b> go (as T5)."""
    return re.sub(r"<(/)?b>", "", text.replace("<br>", " "))


def _multirc_field(record: Record, key: str) -> str:
    return clean_paragraph(record[key]) if key == "paragraph" else record[key]


def _multirc_metric(golds, predictions, records) -> dict[str, float]:
    """F1a and EM, questions told apart by (paragraph, question) index."""
    groups = [(r["idx"]["paragraph"], r["idx"]["question"]) for r in records]
    return metrics.multirc_f1a_and_em(golds, predictions, groups)


# ---------------------------------------------------------------- WSC


def _mark(text: str, span: str, index: int, mark: str) -> str:
    """Surround `span`, which starts at word `index` of `text`, by `mark` (T5's WSC preprocessing)."""
    match = re.match(r"^((?:\S+\s){%d})(%s)" % (index, re.escape(span)), text)
    if not match:
        raise ValueError(f"WSC span {span!r} does not start at word {index} of {text!r}")
    return f"{text[:match.end(1)]}{mark} {span} {mark}{text[match.end(2):]}"


def wsc_text(record: Record) -> str:
    """The text with `* span1 *` and `# span2 #` marked (span2's index shifts by the 2 marks before it)."""
    text = _mark(record["text"], record["span1_text"], record["span1_index"], "*")
    shift = 2 if record["span1_index"] < record["span2_index"] else 0
    return _mark(text, record["span2_text"], record["span2_index"] + shift, "#")


# ---------------------------------------------------------------- ReCoRD


def record_passage(passage: str) -> str:
    """The passage with its '@highlight' lines joined as sentences (T5's ReCoRD preprocessing)."""
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", passage)
    return re.sub(r"\n@highlight\n", ". ", passage)


def _record_prompt(record: Record) -> str:
    entities = ", ".join(record["entities"])
    return f"record query: {record['query']} entities: {entities} passage: {record_passage(record['passage'])}"


def _check_record(record: Record) -> None:
    if "@placeholder" not in record["query"]:
        raise ValueError(f"ReCoRD query {record['query']!r} has no @placeholder")
    if not record["entities"] or not record["answers"]:
        raise ValueError("a ReCoRD record needs candidate entities and gold answers")


def _record() -> Benchmark:
    return Benchmark(
        name="superglue_record", eval_data=_data("record"), train_data=_data("record", "train"),
        gold=lambda r: r["answers"], metric=on_values(metrics.squad_v1),
        text_to_text=TextToText(prompt=_record_prompt, targets=lambda r: r["answers"],
                                parse=lambda text, record, canonical: text,
                                gold=lambda r, canonical: [canonical(a) for a in r["answers"]]),
        features=CandidateScoring(
            candidates=lambda r: list(dict.fromkeys(r["entities"])),
            texts=lambda r, entity: (record_passage(r["passage"]), r["query"].replace("@placeholder", entity)),
            is_answer=lambda r, entity: entity in r["answers"]),
        check=_check_record,
    )


# ---------------------------------------------------------------- the tasks

_add("boolq", ("passage", "question"), BOOL, PairClassification(fields("question", "passage"), label, 2),
     on_values(metrics.accuracy))
_add("cb", ("hypothesis", "premise"), ("entailment", "contradiction", "neutral"),
     PairClassification(fields("premise", "hypothesis"), label, 3), on_values(metrics.macro_f1_and_accuracy))
_add("copa", ("choice1", "choice2", "premise", "question"), ("choice1", "choice2"),
     MultipleChoice(_copa_choices, label), on_values(metrics.accuracy), check=_check_copa)
_add("multirc", ("question", "answer", "paragraph"), BOOL,
     PairClassification(lambda r: (f"{r['question']} {r['answer']}", clean_paragraph(r["paragraph"])), label, 2),
     _multirc_metric, prompt=t5_prompt("multirc", ("question", "answer", "paragraph"), _multirc_field))
add(_record())
_add("rte", ("hypothesis", "premise"), NLI, PairClassification(fields("premise", "hypothesis"), label, 2),
     on_values(metrics.accuracy))
_add("wic", ("sentence1", "sentence2", "word"), BOOL,
     PairClassification(lambda r: (f"{r['word']}: {r['sentence1']}", r["sentence2"]), label, 2),
     on_values(metrics.accuracy))
_add("wsc", (), BOOL, PairClassification(lambda r: (wsc_text(r), None), label, 2), on_values(metrics.accuracy),
     config="wsc.fixed", prompt=lambda r: f"wsc text: {wsc_text(r)}", check=wsc_text)

# The diagnostics: test splits only, an RTE model, cast as RTE.
add(classification_task(
    name="superglue_axb", eval_data=_data("axb", "test"), train_data=None,
    prompt=lambda r: f"rte hypothesis: {r['sentence2']} premise: {r['sentence1']}", names=NLI,
    features=PairClassification(fields("sentence1", "sentence2"), label, 2),
    metric=on_values(metrics.matthews_corr), train_instead="superglue_rte"))
add(classification_task(
    name="superglue_axg", eval_data=_data("axg", "test"), train_data=None,
    prompt=t5_prompt("rte", ("hypothesis", "premise")), names=NLI,
    features=PairClassification(fields("premise", "hypothesis"), label, 2),
    metric=lambda golds, predictions, records: metrics.gender_parity_and_accuracy(
        golds, predictions, [r["hypothesis"] for r in records]),
    train_instead="superglue_rte"))
SUITES["superglue"] = tuple(name for names in metrics.SUPERGLUE_SCORE_TASKS.values() for name in names)
