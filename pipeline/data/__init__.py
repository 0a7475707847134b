"""A split of a cache as training and evaluation read it: `split_tensors` (a split's index, its pooled embeddings
in memory once read, the epoch sampler), `pooled_source` and `token_source` (pooled embeddings and cached tokens,
in memory or streamed from the shards, as `memory_budget` decides), `epoch_stream` (the chunked epoch order and
the micro-batches of both), `images` (images decoded from the cache's paths, for backbone runs)."""
