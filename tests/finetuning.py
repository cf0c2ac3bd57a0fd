"""A fine-tuning run through the `plmjax` command, shared by the tests of each encoder family."""

import json
import os

import tensorflow_datasets as tfds

from plmjax.cli import main


def fine_tune_glue_rte(source: str, workdir: str) -> dict:
    """`plmjax train --init_from SOURCE --task glue_rte` for two steps on tfds mock data; the run's config.json."""
    with tfds.testing.mock_data(num_examples=12):
        assert main(["train", "--init_from", source, "--workdir", workdir, "--task", "glue_rte", "--no-progress",
                     "--set", "train.num_steps=2", "--set", "train.eval_steps=1", "--set", "mesh.data=1",
                     "--set", "data.batch_size=4", "--set", "data.seq_length=32"]) == 0
    return json.load(open(os.path.join(workdir, "config.json")))
