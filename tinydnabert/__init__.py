"""tinydnabert: FASTA -> BPE tokenizer -> WebDataset shards -> DeepSpeed MLM pretraining -> NT benchmark.

Importing this package has no side effects: no seeding, no process groups, no environment changes.
Data flows one way: fasta -> segment -> tokenizer -> shards -> data -> train -> export -> finetune.
"""

__version__ = "0.1.0"
