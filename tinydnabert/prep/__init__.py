"""Preparation: a genome FASTA becomes a BPE tokenizer and WebDataset shards with a manifest.

download -> fasta -> segment -> tokenizer -> shards (writing them, and the one shard checker) -> preprocess.
Imports nothing from pretrain/, eval/ or app/.
"""
