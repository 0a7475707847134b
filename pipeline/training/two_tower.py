"""Two-tower backbone training: the image encoder and a text tower trained together (`model.text`).

CLIP from scratch (Radford et al., 2021), LiT (Zhai et al., 2022: `model.trainable: none` locks the image
tower) and ResNet + DistilBERT/Longformer pairs (Sanh et al., 2019; Beltagy et al., 2020) are configs of this
one trainer. Pairs come from the same `EpochSampler` as every mode; the loader workers decode and augment each
image and tokenise its caption text (`captions/text` of the cache). Validation embeds un-augmented images and
the split's caption texts. `best.pt` holds both towers and their architectures, so `xalign encode --image-
model RUN/best.pt --text-model RUN/best.pt` rebuilds either offline."""

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from encoding.backbones.image_encoder import CHECKPOINT_FORMAT, ImageEncoder
from encoding.backbones.text_architecture import resolve_text_architecture
from encoding.backbones.text_encoder import build_text_encoder, text_tokenizer
from encoding.errors import BadInput
from encoding.runtime import autocast
from pipeline.config.backbone import trainable_layers
from pipeline.data.images import PairImages, pair_loader
from pipeline.data.split_tensors import SplitTensors
from pipeline.runs.backbone_runs import TwoTowerRun
from pipeline.training.backbone import BackboneTrainer, lock_trunk
from pipeline.training.checkpoint import load_weights
from pipeline.training.distributed import gather_features
from pipeline.training.freezing import lock
from pipeline.training.loop import TIMED_QUERIES

DEFAULT_DIM = 512  # the shared embedding width when model.output_dim is left out


class TwoTowerTrainer(BackboneTrainer):
    """Trains `config`'s image encoder and text tower on the `train` split's images and caption texts."""

    run_class = TwoTowerRun

    def build_model(self) -> nn.Module:
        m = self.config.model
        output_dim = m.output_dim or DEFAULT_DIM
        image = self.image_encoder_of(output_dim)
        self.text_architecture = resolve_text_architecture(m.text.tower(), output_dim)
        self.tokenize = text_tokenizer(self.text_architecture)
        text = build_text_encoder(self.text_architecture, pretrained=True)
        text.tower.checkpointing(m.text.checkpointing)
        tower, layers = text.tower, trainable_layers(m.text.trainable, "model.text.trainable")
        self.locked = lock_trunk(image, m.trainable) + lock(
            tower, tower.layers, tower.inputs(), layers, "model.text.trainable"
        )
        self.train_pairs = PairImages(self.train_images, self.train.captions)
        return self.assemble(image, text)

    def assemble(self, image: ImageEncoder, text: nn.Module) -> nn.Module:
        """The model of the two towers (the run kind's own assembly)."""
        return self.run_class.assemble(image, text, self.config)

    def make_run(self) -> TwoTowerRun:
        cache_dir = self.train.cache_dir
        return self.run_class(self.config, self.model, self.device, cache_dir, self.precision, self.tokenize)

    def pair_batches(self, rows, captions, batch: int, drop_last: bool) -> Iterator:
        """Micro-batches of ((B,) image rows, (B, 3, H, W) pixels, (B, L) caption ids, (B, L) mask) of the
        pairs `zip(rows, captions)`: decoded, augmented and tokenised in the loader workers."""
        pairs = list(zip(rows.tolist(), captions.tolist(), strict=True))
        return iter(self.pair_loader(self.train_pairs, pairs, batch, drop_last))

    def pair_loader(self, dataset, order, batch: int, drop_last: bool):
        w = self.config.data.num_workers
        return pair_loader(dataset, order, batch, w, drop_last, self.device.type == "cuda", self.tokenize)

    def batch_loss(self, batch) -> torch.Tensor:
        rows, pixels, ids, mask = (x.to(self.device, non_blocking=True) for x in batch)
        with autocast(self.device, self.precision):
            image, text = self.forward(pixels, ids, mask)
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        return self.loss(*(gather_features(x) for x in (image, text, rows)))

    def query_search(self, test: SplitTensors, gallery: torch.Tensor, k: int = 10) -> Callable[[], object]:
        """Tokenise and embed 1,000 test caption texts, then take their top K of the gallery."""
        texts = [test.captions[i % len(test.captions)] for i in range(TIMED_QUERIES)]
        k = min(k, len(gallery))

        def search():
            self.model.eval()
            with torch.no_grad():
                ids, mask = self.tokenize(texts)
                return (self.run_model.encode_tokens(ids, mask) @ gallery.T).topk(k, dim=1)

        return search

    def checkpoint(self) -> dict:
        """Both towers: what `xalign encode --image-model/--text-model RUN/best.pt` rebuild (weights_only-safe)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "architecture": self.architecture,
            "encoder": self.model.image.state_dict(),
            "text_architecture": self.text_architecture,
            "text_encoder": self.model.text.state_dict(),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
        }

    def load_weights(self, state: dict, path: Path) -> None:
        if state.get("text_architecture", self.text_architecture) != self.text_architecture:
            raise BadInput(
                f"{path}: the text tower's model or tokenizer at {self.text_architecture['arch']} changed since "
                "this run was trained; train a new run"
            )
        load_weights(self.model.image, state.get("encoder"), path)
        load_weights(self.model.text, state.get("text_encoder"), path)
