"""Backbone-training mode: an image encoder trained end to end against a cache's frozen caption embeddings.

`config` (YAML → frozen dataclasses), `data` (images from the cache's paths, augmentation, loaders),
`trainer` (the loop, checkpoints, exact resume), `bench` (training-step throughput). The encoder
architecture lives in `encoding.backbones.image_encoder`, so `xalign encode` can load what this trains.
"""
