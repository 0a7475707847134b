"""The writing side's token helpers on hand-built tensors: real tokens first, per-shard padding, grid pooling."""

import pytest
import torch
import torch.nn.functional as F

from encoding.backbones.token_outputs import feature_map_tokens, patch_tokens, right_padded_mask
from encoding.errors import BadInput
from encoding.token_packing import ImageTokens, check_image_tokens, pad_and_stack, real_tokens_first


def test_real_tokens_come_first_whatever_side_was_padded():
    hidden = torch.arange(1.0, 9.0).reshape(2, 4, 1)  # rows [1 2 3 4], [5 6 7 8]
    mask = torch.tensor([[False, False, True, True], [True, True, True, False]])  # left- and right-padded
    states, packed = real_tokens_first(hidden, mask)
    assert states.dtype == torch.float16 and packed.tolist() == [[True, True, False], [True, True, True]]
    assert states[..., 0].tolist() == [[3, 4, 0], [5, 6, 7]]  # order kept, zeros at padding, cut to 3


def test_batches_are_padded_to_the_shards_longest_caption():
    first = (torch.ones(2, 3, 4, dtype=torch.float16), torch.ones(2, 3, dtype=torch.bool))
    second = (torch.ones(1, 5, 4, dtype=torch.float16), torch.ones(1, 5, dtype=torch.bool))
    states, mask = pad_and_stack([first, second], token_dim=4)
    assert states.shape == (3, 5, 4) and mask.sum(dim=1).tolist() == [3, 3, 5]
    assert states[:2, 3:].abs().sum() == 0
    empty_states, empty_mask = pad_and_stack([], token_dim=4)
    assert empty_states.shape == (0, 0, 4) and empty_mask.shape == (0, 0)


def test_grid_pooling_is_adaptive_avg_pool2d_in_row_major_order():
    maps = torch.randn(2, 3, 4, 6)  # (B, D, h, w)
    tokens, grid = feature_map_tokens(maps)
    assert grid == (4, 6) and torch.equal(tokens[:, 1], maps[:, :, 0, 1])  # row-major
    stored = ImageTokens(num_tokens=4, token_dim=3, pool_to=4, grid=(2, 2)).store(tokens, grid)
    expected = F.adaptive_avg_pool2d(maps, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(stored.float(), expected, atol=2e-3, rtol=2e-3)
    as_is = ImageTokens(num_tokens=24, token_dim=3, pool_to=None, grid=grid).store(tokens, grid)
    assert as_is.dtype == torch.float16 and as_is.shape == (2, 24, 3)


def test_prefix_tokens_are_dropped_and_masks_count_by_position():
    tokens, grid = patch_tokens(torch.randn(1, 1 + 4 + 9, 8), num_prefix=5, grid=(3, 3))
    assert tokens.shape == (1, 9, 8) and grid == (3, 3)
    assert patch_tokens(torch.randn(1, 10, 8), num_prefix=0, grid=(3, 3))[1] is None  # not a 3x3 grid
    ids = torch.tensor([[49406, 0, 267, 49407, 0, 0]])  # a real id 0 ('!') before the end is a real token
    assert right_padded_mask(ids, pad_id=0).tolist() == [[True, True, True, True, False, False]]


def test_image_tokens_flag_needs_tokens_and_a_square():
    check_image_tokens(None, tokens=False)
    check_image_tokens(49, tokens=True)
    with pytest.raises(BadInput, match=r"--image-tokens 4: only with --tokens"):
        check_image_tokens(4, tokens=False)
    for bad in (0, 8, 50):
        with pytest.raises(BadInput, match=rf"--image-tokens {bad}: expected a perfect square"):
            check_image_tokens(bad, tokens=True)
