"""The models of two-tower backbone runs: an image and a text tower into one space (`TwoTower`, CLIP's dual
encoder), and the same with fusion layers that score pairs (`FusedTwoTower`, ALBEF's image-grounded text
encoder: the text tower's hidden states cross-attend to the image trunk's spatial tokens)."""

import torch
from torch import nn

from encoding.backbones.image_encoder import ImageEncoder
from pipeline.heads.cross_encoder import MatchHead


class TwoTower(nn.Module):
    """An image encoder and a text encoder into one `output_dim` space (unnormalised outputs)."""

    def __init__(self, image: ImageEncoder, text: nn.Module):
        super().__init__()
        self.image, self.text = image, text

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        """(B, 3, H, W) pixels, (B, L) ids and mask → (B, D) image and (B, D) caption embeddings."""
        return self.image(pixels), self.text(ids, mask)


class FusedTwoTower(TwoTower):
    """Two towers plus a `MatchHead` over the image trunk's tokens and the text tower's hidden states."""

    def __init__(self, image: ImageEncoder, text: nn.Module, fusion):
        super().__init__(image, text)
        f = fusion
        image_dim, text_dim = image.head[0].in_features, text.tower.token_dim
        self.matcher = MatchHead(image_dim, text_dim, f.hidden_dim, f.num_heads, f.num_layers, f.dropout)

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        """(B, D) image and caption embeddings, (B, T, C) image tokens and (B, L, W) caption hidden states."""
        image, image_tokens, _ = self.image.forward_with_tokens(pixels)
        text, text_tokens = self.text.forward_with_tokens(ids, mask)
        return image, text, image_tokens, text_tokens
