"""Pretraining: shards streamed into a DeepSpeed engine, checkpoints, TensorBoard, the Hugging Face export.

model (knows nothing of DeepSpeed) <- data (loaders) <- train (setup -> resume -> fit -> finalize) -> export.
Imports prep/ (shard format, tokenizer) and nothing from eval/ or app/.
"""
