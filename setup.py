"""tinydnabert: pretrain a DNA language model from a reference genome, end to end."""
from setuptools import find_packages, setup

setup(
    name="tinydnabert",
    version="0.1.0",
    description="An open, fast, from-scratch training system for genomic language models "
    "(FASTA -> BPE -> WebDataset shards -> DeepSpeed MLM pretraining -> NT benchmark).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tinydnabert", "tinydnabert.*"]),
    # Data the package reads at run time travels inside it: the DeepSpeed configs and the launcher scripts
    # (the checkout's top-level ds_configs/ and launch/ are links to these folders), the published scores and
    # expected validation curves.
    package_data={"tinydnabert": ["published/*.csv", "published/*.md", "published/*.json",
                                  "pretrain/ds_configs/*.json", "app/launch/*.py"]},
    install_requires=[
        # torch: install the build for your machine FIRST (README step 1). An unpinned
        # `torch` here would let pip pull a multi-GB CUDA wheel onto a CPU-only box.
        "torch>=2.1",
        "deepspeed>=0.14",
        "transformers>=4.40",
        # the NT tasks are read file by file from the hub (hf_hub_download); transformers needs it anyway
        "huggingface_hub>=0.20",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "webdataset>=0.2.86",
        "pysam>=0.22",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "tqdm>=4.65",
    ],
    extras_require={
        # `datasets` reads parquet/csv --data (files or http(s) URLs); the NT hub tasks do not need it.
        "hub": ["datasets>=2.14"],
        "test": ["pytest>=7", "pytest-timeout>=2.1", "datasets>=2.14", "accelerate>=0.26", "ruff>=0.5"],
        # The HF Trainer baseline of benchmarks/throughput.py needs accelerate.
        "bench": ["accelerate>=0.26"],
    },
    entry_points={"console_scripts": ["tinydnabert=tinydnabert.app.cli:main"]},
)
