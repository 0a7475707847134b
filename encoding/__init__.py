"""Frozen-backbone encoding of image-caption datasets into an HDF5 embedding cache.

Library: `encode` (`EncodeRequest`, `encode_cache`), `split` (`split_cache`, `verify`), `cache`
(shards and metadata on disk), `datasets` and `backbones` (registries of readers and frozen
encoders). `commands` holds the `xalign encode / split / inspect` argument parsers; nothing in the
library imports it.
"""
