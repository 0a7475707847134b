"""Alignment heads, losses, training, tuning and evaluation on cached embeddings."""
