"""A split of a cache as training and evaluation read it: `split_tensors` (pooled embeddings in memory and the
epoch sampler), `token_source` and `token_stream` (cached tokens, in memory or streamed from the shards),
`images` (images decoded from the cache's paths, for backbone runs)."""
