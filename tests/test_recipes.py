"""The recipe benchmark's harness runs a tiny row end to end, so it cannot rot (real data, a tiny budget)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import recipes  # noqa: E402


def test_one_tiny_row_pretrains_fine_tunes_and_tabulates(tmp_path, capsys):
    out = tmp_path / "records.json"
    records = recipes.main(["--rows", "mlm+full", "--tasks", "fortunes_topic", "--cache", str(tmp_path),
                            "--json", str(out)], plan=recipes.TINY)
    assert [(r["row"], r["task"], r["setting"]) for r in records] == [
        ("mlm+full", "fortunes_topic", "full"), ("mlm+full", "fortunes_topic", "n8")]
    for record in records:
        assert 0 <= record["metrics"]["accuracy"][0] <= 100 and record["pretraining_flops"] > 0
        assert record["trainable_parameters"] > 100_000  # full fine-tuning: every parameter
    assert json.load(open(out)) == records
    table = capsys.readouterr().out
    assert "| mlm+full | full |" in table and "| mlm+full | n8 |" in table
    again = recipes.main(["--rows", "mlm+full", "--tasks", "fortunes_topic", "--cache", str(tmp_path)],
                         plan=recipes.TINY)  # cached: nothing trains again
    assert [r["metrics"] for r in again] == [r["metrics"] for r in records]
