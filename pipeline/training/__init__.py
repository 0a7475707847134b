"""Training: one loop (`loop.Trainer`) for every mode, each mode supplying its step and its embeddings.

`heads.HeadTrainer` trains projection heads on cached embeddings; `pipeline.training.backbone` trains
an image encoder end to end. `checkpoint` holds the checkpoint files and the resumable state,
`distributed` the torchrun set-up and the cross-rank feature gathering.
"""
