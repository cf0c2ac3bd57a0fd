"""Every downstream task on tfds mock data, through the seqio registry, in both formats.

tfds's random mock records break the invariants of SQuAD (answers at their offsets), COPA (cause or
effect), ReCoRD (@placeholder), WSC (spans at their word indices) and AX-g (minimal pairs); those
datasets get well-formed generated records here, and the random ones are checked to be refused.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from plmjax.config import bert, t5
from plmjax.data import downstream, encoding, registry, sources, vocabularies
from plmjax.data.corpus import load_documents
from plmjax.data.glue import stsb_target
from plmjax.data.squad import SpanExtraction
from plmjax.data.superglue import record_passage, wsc_text
from plmjax.data.tokenizer import Tokenizer
from plmjax.models.finetuning import finetuning_config
from plmjax.models.task import make_model_task

NUM = 4  # records per mock split (even: AX-g pairs)
LENGTH = 128  # long enough that no mock record is cut
WELL_FORMED = {"squad_v1", "squad_v2", "superglue_copa", "superglue_record", "superglue_wsc", "superglue_axg"}

# T5's text-to-text prompts, spelled out field by field.
PROMPTS = {
    "glue_cola": "cola sentence: {sentence}", "glue_sst2": "sst2 sentence: {sentence}",
    "glue_mrpc": "mrpc sentence1: {sentence1} sentence2: {sentence2}",
    "glue_qqp": "qqp question1: {question1} question2: {question2}",
    "glue_stsb": "stsb sentence1: {sentence1} sentence2: {sentence2}",
    "glue_qnli": "qnli question: {question} sentence: {sentence}",
    "glue_rte": "rte sentence1: {sentence1} sentence2: {sentence2}",
    "glue_wnli": "wnli sentence1: {sentence1} sentence2: {sentence2}",
    **{name: "mnli hypothesis: {hypothesis} premise: {premise}"
       for name in ("glue_mnli", "glue_mnli_matched", "glue_mnli_mismatched", "glue_ax")},
    "superglue_boolq": "boolq passage: {passage} question: {question}",
    "superglue_cb": "cb hypothesis: {hypothesis} premise: {premise}",
    "superglue_copa": "copa choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}",
    "superglue_multirc": "multirc question: {question} answer: {answer} paragraph: {paragraph}",
    "superglue_record": "record query: {query} entities: {entities} passage: {passage}",
    "superglue_rte": "rte hypothesis: {hypothesis} premise: {premise}",
    "superglue_wic": "wic sentence1: {sentence1} sentence2: {sentence2} word: {word}",
    "superglue_wsc": "wsc text: {marked}",
    "superglue_axb": "rte hypothesis: {sentence2} premise: {sentence1}",
    "superglue_axg": "rte hypothesis: {hypothesis} premise: {premise}",
    "squad_v1": "question: {question} context: {context}", "squad_v2": "question: {question} context: {context}",
}
# The encoder's text pair (fields) for the sentence(-pair) tasks.
PAIRS = {
    "glue_cola": ("sentence", None), "glue_sst2": ("sentence", None), "glue_mrpc": ("sentence1", "sentence2"),
    "glue_qqp": ("question1", "question2"), "glue_stsb": ("sentence1", "sentence2"),
    "glue_qnli": ("question", "sentence"), "glue_rte": ("sentence1", "sentence2"),
    "glue_wnli": ("sentence1", "sentence2"),
    **{name: ("premise", "hypothesis")
       for name in ("glue_mnli", "glue_mnli_matched", "glue_mnli_mismatched", "glue_ax", "superglue_cb",
                    "superglue_rte", "superglue_axg")},
    "superglue_boolq": ("question", "passage"), "superglue_axb": ("sentence1", "sentence2"),
}
WORDS = "the quick brown fox jumps over seven lazy dogs while wizards judge boxing matches".split()


# ---------------------------------------------------------------- mock records


def _words(rng, count: int) -> list[str]:
    return [str(w) for w in rng.choice(WORDS, count)]


def _well_formed_record(dataset: str, index: int, rng) -> dict:
    """A record of `dataset` (tfds 'name/config') that keeps the invariants random mock data breaks."""
    words = _words(rng, 12)
    if dataset.startswith("squad"):
        answer = " ".join(words[5:7])
        start = len(" ".join(words[:5])) + 1
        impossible = dataset.endswith("v2.0") and index % 2 == 1
        answers = {"text": [] if impossible else [answer], "answer_start": [] if impossible else [start]}
        extra = {"is_impossible": impossible, "plausible_answers": {"text": [], "answer_start": []}} \
            if dataset.endswith("v2.0") else {}
        return {"id": str(index), "title": "t", "context": " ".join(words), "question": " ".join(words[:3]),
                "answers": answers, **extra}
    if dataset == "super_glue/copa":
        return {"premise": " ".join(words[:5]), "choice1": " ".join(words[5:8]), "choice2": " ".join(words[8:]),
                "question": ("cause", "effect")[index % 2], "idx": index, "label": index % 2}
    if dataset == "super_glue/record":
        entities = sorted(set(words[:6]))
        return {"passage": " ".join(words), "query": f"{words[0]} @placeholder {words[1]}", "entities": entities,
                "answers": [entities[index % len(entities)]], "idx": {"passage": index, "query": index}}
    if dataset == "super_glue/wsc.fixed":
        return {"text": " ".join(words), "span1_index": 1, "span1_text": words[1], "span2_index": 6,
                "span2_text": words[6], "idx": index, "label": index % 2}
    if dataset == "super_glue/axg":  # minimal pairs: examples 2k and 2k+1 share the hypothesis
        pair = np.random.default_rng(index // 2)
        return {"premise": " ".join(words[:6]), "hypothesis": " ".join(_words(pair, 4)), "idx": index,
                "label": index % 2}
    raise KeyError(dataset)


def _as_dataset(builder, split, **kwargs):
    dataset = f"{builder.name}/{builder.builder_config.name}"
    rng = np.random.default_rng(0)
    records = [_well_formed_record(dataset, i, rng) for i in range(NUM)]
    return tf.data.Dataset.from_generator(lambda: iter(records),
                                          output_signature=builder.info.features.get_tensor_spec())


def mock(name: str):
    """tfds mock data for task `name`: random records, or well-formed ones where random ones are malformed."""
    if name in WELL_FORMED:
        return tfds.testing.mock_data(num_examples=NUM, as_dataset_fn=_as_dataset)
    return tfds.testing.mock_data(num_examples=NUM)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def vocab():
    return vocabularies.from_tokenizer(Tokenizer.train(load_documents("pydoc")[:40], kind="wordpiece", vocab_size=700))


def _config(family, name: str):
    config = family(vocab_size=700, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64)
    config.data.seq_length, config.data.target_length, config.data.batch_size = LENGTH, 16, NUM
    return finetuning_config(config, name)


def _eval_batch(config, vocab):
    return sources.make_source(config, vocab, "eval").batch(0)


def _text(vocab, ids) -> str:
    ids = list(ids)
    return vocab.decode(ids[: ids.index(vocab.eos_id)] if vocab.eos_id in ids else ids)


def _canonical(vocab, text: str) -> str:
    return vocab.decode(vocab.encode(text))


def _expected_prompt(name: str, record: dict) -> str:
    fields = dict(record, entities=", ".join(record.get("entities", [])), marked="")
    if name == "superglue_wsc":
        fields["marked"] = wsc_text(record)
    return PROMPTS[name].format(**fields)


def _pair_tokens(tok, a: str, b: str | None) -> tuple[list[int], list[int]]:
    tokens = [tok.cls_id, *tok.encode(a), tok.sep_id] + ([*tok.encode(b), tok.sep_id] if b is not None else [])
    return tokens, [0] * (len(tok.encode(a)) + 2) + [1] * (len(tokens) - len(tok.encode(a)) - 2)


ALL_TASKS = sorted(PROMPTS)


def test_every_task_is_registered_in_both_formats_and_the_benchmarks_as_mixtures():
    assert sorted(downstream.benchmarks()) == ALL_TASKS
    names = set(registry.names())
    assert {f"{task}_{fmt}" for task in ALL_TASKS for fmt in ("t2t", "features")} <= names
    assert {"glue_t2t", "superglue_t2t"} <= names
    assert downstream.expand("glue") == ["glue_cola", "glue_sst2", "glue_mrpc", "glue_stsb", "glue_qqp",
                                         "glue_mnli_matched", "glue_mnli_mismatched", "glue_qnli", "glue_rte",
                                         "glue_wnli"]
    assert len(downstream.expand("superglue")) == 8 and downstream.expand("squad_v2_t2t") == ["squad_v2"]


# ---------------------------------------------------------------- text to text


@pytest.mark.parametrize("name", ALL_TASKS)
def test_text_to_text_rows_hold_t5_prompts_and_targets(name, vocab):
    task = downstream.benchmarks()[name]
    with mock(name):
        records = downstream.load_records(task, "eval")
        batch = _eval_batch(_config(t5, name), vocab)
    assert {k: v.shape for k, v in batch.items()} == {
        "encoder_input_ids": (NUM, LENGTH), "decoder_input_ids": (NUM, 16), "decoder_target_ids": (NUM, 16),
        "decoder_weights": (NUM, 16)}
    for row, record in enumerate(records):
        assert _text(vocab, batch["encoder_input_ids"][row]) == _canonical(vocab, _expected_prompt(name, record))
        target = task.text_to_text.targets(record)[0]
        assert _text(vocab, batch["decoder_target_ids"][row]) == _canonical(vocab, target)
    targets = batch["decoder_target_ids"]
    assert (batch["decoder_input_ids"][:, 1:] == targets[:, :-1]).all()
    assert (batch["decoder_input_ids"][:, 0] == 0).all()  # T5's decoder start
    assert (batch["decoder_weights"] == (targets != vocab.pad_id)).all()


@pytest.mark.parametrize("name", [n for n in ALL_TASKS if n not in ("glue_stsb", "superglue_record", "squad_v1",
                                                                     "squad_v2")])
def test_label_parsers_invert_the_label_mapping(name, vocab):
    task = downstream.benchmarks()[name]
    builder = tfds.builder(task.eval_data[0])
    names = builder.info.features["label"].names
    canonical = lambda text: _canonical(vocab, text)  # noqa: E731
    for label, label_name in enumerate(names):
        target = task.text_to_text.targets({"label": label})
        assert target == [label_name]  # T5's targets are the tfds label names
        assert task.text_to_text.parse(canonical(target[0]), {}, canonical) == label
    assert task.text_to_text.parse("maybe", {}, canonical) == -1


def test_stsb_targets_round_to_a_fifth_and_parse_back(vocab):
    parse = downstream.benchmarks()["glue_stsb"].text_to_text.parse
    canonical = lambda text: _canonical(vocab, text)  # noqa: E731
    for score, target in ((0.0, "0.0"), (3.77, "3.8"), (2.5, "2.4"), (4.91, "5.0"), (1.1, "1.2")):
        assert stsb_target(score) == target
        assert parse(canonical(target), {}, canonical) == pytest.approx(float(target))
    assert parse("five", {}, canonical) == -1.0


def test_qa_text_to_text_golds_are_every_answer_as_the_vocabulary_writes_it(vocab):
    canonical = lambda text: _canonical(vocab, text)  # noqa: E731
    record = {"answers": ["Barack Obama", "Obama"], "entities": ["Obama"], "query": "@placeholder", "passage": ""}
    t2t = downstream.benchmarks()["superglue_record"].text_to_text
    assert t2t.targets(record) == ["Barack Obama", "Obama"]  # training: one row per answer
    assert t2t.gold(record, canonical) == ["barack obama", "obama"]  # lowercasing WordPiece
    squad = downstream.benchmarks()["squad_v2"].text_to_text
    assert squad.targets({"is_impossible": True, "answers": {"text": [], "answer_start": []}}) == [""]
    assert squad.gold({"is_impossible": True, "answers": {"text": [], "answer_start": []}}, canonical) == []


def test_t5_special_preprocessing_wsc_marks_and_record_highlights():
    record = {"text": "Mitchell asked Tom if he could lend some money.", "span1_text": "Tom", "span1_index": 2,
              "span2_text": "he", "span2_index": 4}
    assert wsc_text(record) == "Mitchell asked * Tom * if # he # could lend some money."
    assert record_passage("A storm hit.\n@highlight\nRoads closed\n@highlight\nNo one hurt") == \
        "A storm hit. Roads closed. No one hurt"


# ---------------------------------------------------------------- encoder features


@pytest.mark.parametrize("name", ALL_TASKS)
def test_features_rows_have_the_heads_shapes(name, vocab):
    task = downstream.benchmarks()[name]
    with mock(name):
        records = downstream.load_records(task, "eval")
        batch = _eval_batch(_config(bert, name), vocab)
    head = task.features.head
    rows = (NUM, 2, LENGTH) if head == "multiple_choice" else (NUM, LENGTH)
    for key in ("input_ids", "segment_ids", "attention_mask"):
        assert batch[key].shape == rows and batch[key].dtype == np.int32
    assert (batch["attention_mask"] == (batch["input_ids"] != vocab.pad_id)).all()
    assert (batch["input_ids"][..., 0] == vocab.cls_id).all()
    make_model_task(_config(bert, name)).validate(batch)  # labels in range for the head
    if name in PAIRS:
        tok = vocab.tokenizer
        for row, record in enumerate(records):
            a, b = (record[f] if f else None for f in PAIRS[name])
            tokens, segments = _pair_tokens(tok, a, b)
            assert batch["input_ids"][row, : len(tokens)].tolist() == tokens
            assert batch["segment_ids"][row, : len(tokens)].tolist() == segments
            assert (batch["input_ids"][row, len(tokens):] == vocab.pad_id).all()
        assert batch["labels"].tolist() == pytest.approx([r["label"] for r in records])


def test_copa_wic_multirc_record_rows_join_their_fields(vocab):
    tok = vocab.tokenizer
    copa = downstream.benchmarks()["superglue_copa"].features
    rows = copa.encode([{"premise": "The man fell", "choice1": "he slipped", "choice2": "he sang",
                         "question": "cause", "label": 0}], tok, 32)
    first, _ = _pair_tokens(tok, "The man fell", "because he slipped")
    assert rows.arrays["input_ids"].shape == (1, 2, 32)
    assert rows.arrays["input_ids"][0, 0, :len(first)].tolist() == first
    wic = downstream.benchmarks()["superglue_wic"].features
    assert wic.texts({"word": "bank", "sentence1": "a river bank", "sentence2": "a bank loan"}) == \
        ("bank: a river bank", "a bank loan")
    multirc = downstream.benchmarks()["superglue_multirc"].features
    assert multirc.texts({"question": "Who?", "answer": "Ann", "paragraph": "Ann <b>ran</b>.<br>Bob sat."}) == \
        ("Who? Ann", "Ann ran. Bob sat.")
    record = downstream.benchmarks()["superglue_record"].features
    example = {"passage": "Ann met Bob.\n@highlight\nParis", "query": "@placeholder went home",
               "entities": ["Ann", "Bob", "Ann"], "answers": ["Bob"]}
    rows = record.encode([example], tok, 32)
    assert rows.extras == ["Ann", "Bob"] and rows.arrays["labels"].tolist() == [0, 1]  # duplicates scored once
    assert record.predictions(np.array([[0.0, 2.0], [0.0, 1.0]]), rows, [example]) == ["Ann"]


# ---------------------------------------------------------------- SQuAD


def _perfect_logits(rows, length: int) -> dict[str, np.ndarray]:
    """Logits that point at each row's labelled span (or [CLS])."""
    starts, ends = np.full((len(rows.record), length), -10.0), np.full((len(rows.record), length), -10.0)
    for row, (s, e) in enumerate(zip(rows.arrays["start_positions"], rows.arrays["end_positions"])):
        starts[row, s], ends[row, e] = 5.0, 5.0
    return {"start_logits": starts, "end_logits": ends}


def test_squad_doc_stride_windows_map_answers_back_to_the_exact_original_text(vocab):
    tok = vocab.tokenizer
    filler = " ".join(WORDS * 3)
    answer = "U.S. Open (2019),"
    context = f"{filler} Then came the {answer} where seven wizards won. {filler}"
    record = {"context": context, "question": "Which event?",
              "answers": {"text": [answer, "Open"], "answer_start": [context.index(answer), context.index("Open")]}}
    features = SpanExtraction(version_2=False, doc_stride=16)
    rows = features.encode([record], tok, 48)
    assert len(rows.record) >= 5  # the context takes several overlapping windows
    labelled = [r for r in range(len(rows.record)) if rows.arrays["start_positions"][r] > 0]
    assert labelled  # some window holds the whole answer ...
    for r in labelled:  # ... and its labels cover exactly the answer's tokens
        s, e = rows.arrays["start_positions"][r], rows.arrays["end_positions"][r]
        assert tok.decode(rows.arrays["input_ids"][r, s:e + 1]) == _canonical(vocab, answer)
    assert features.predictions(_perfect_logits(rows, 48), rows, [record]) == [answer]  # original case and punctuation
    window = rows.extras[labelled[0]]
    assert window.max_context.dtype == bool and 0 < window.max_context.sum() <= len(window.char_spans)


def test_squad_v2_predicts_no_answer_when_the_cls_score_wins(vocab):
    tok = vocab.tokenizer
    record = {"context": "The fox jumps over the dog.", "question": "Who sings?", "is_impossible": True,
              "answers": {"text": [], "answer_start": []}}
    features = SpanExtraction(version_2=True)
    rows = features.encode([record], tok, 32)
    assert rows.arrays["start_positions"].tolist() == [0] and rows.arrays["end_positions"].tolist() == [0]
    assert features.predictions(_perfect_logits(rows, 32), rows, [record]) == [""]
    begin = record["context"].index("jumps over")
    window, end = rows.extras[0], begin + len("jumps over")
    tokens = [i for i, (b, e) in enumerate(window.char_spans) if begin <= b and e <= end]
    span = _perfect_logits(rows, 32)  # a span that beats [CLS] is the answer
    span["start_logits"][0, window.row_offset + tokens[0]] = span["end_logits"][0, window.row_offset + tokens[-1]] = 9.0
    assert features.predictions(span, rows, [record]) == ["jumps over"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name, message", [
    ("squad_v1", "malformed record 0 of tfds squad/v1.1 split 'validation': 5 answer texts but 43 answer starts"),
    ("superglue_copa", "is neither 'cause' nor 'effect'"),
    ("superglue_record", "has no @placeholder"),
    ("superglue_wsc", "does not start at word"),
])
def test_random_mock_records_that_break_a_task_are_refused_by_name(name, message):
    with tfds.testing.mock_data(num_examples=NUM), pytest.raises(ValueError, match=message):
        downstream.load_records(downstream.benchmarks()[name], "eval")


def _labelled(label):
    def as_dataset(builder, split, **kwargs):
        record = {"sentence1": "a", "sentence2": "b", "idx": 0, "label": label}
        return tf.data.Dataset.from_generator(lambda: iter([record]),
                                              output_signature=builder.info.features.get_tensor_spec())
    return as_dataset


def test_labels_out_of_range_and_hidden_labels_are_errors(vocab):
    task = downstream.benchmarks()["glue_rte"]
    with tfds.testing.mock_data(as_dataset_fn=_labelled(2)), pytest.raises(
            ValueError, match=r"glue_rte: malformed record 0 .* label 2 is outside \[0, 2\)"):
        downstream.load_records(task, "train")
    with tfds.testing.mock_data(as_dataset_fn=_labelled(-1)), pytest.raises(ValueError, match="hidden test label"):
        downstream.load_records(task, "eval")
    model_task = make_model_task(_config(bert, "glue_mnli"))
    batch = {"input_ids": np.ones((2, 8), np.int32), "labels": np.array([0, 3], np.int32)}
    with pytest.raises(ValueError, match=r"'labels' holds 3, outside \[0, 3\)"):
        model_task.validate(batch)


def test_unknown_names_formats_and_evaluation_only_training_are_errors():
    with pytest.raises(ValueError, match="unknown task 'glue_foo'.*benchmarks: glue, superglue"):
        downstream.resolve("glue_foo", "encoder")
    with pytest.raises(ValueError, match="'glue_rte_t2t' is in the t2t format"):
        finetuning_config(bert(), "glue_rte_t2t")
    with pytest.raises(ValueError, match="superglue_axg is evaluation-only.*fine-tune on superglue_rte"):
        downstream.load_records(downstream.benchmarks()["superglue_axg"], "train")
