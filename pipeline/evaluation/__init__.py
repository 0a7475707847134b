"""Scoring: `metrics` (Recall@K, ranks, chance), `evaluate` (a run or a cache on a split), `rerank` (a pair
scorer over a dual run's top K), `zeroshot` (class-prompt accuracy)."""
