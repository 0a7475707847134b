"""Frozen-backbone encoding of image-caption datasets into an HDF5 embedding cache."""
