import pytest

from videolisa.errors import InvalidSettings
from videolisa.sampling import dense_positions, num_visual_tokens, sparse_indices, uniform_sample


def test_long_video_takes_bin_midpoints():
    idx = sparse_indices(300, 32)
    assert len(idx) == 32
    assert idx[:4] == [4, 13, 22, 32]
    assert idx[-2:] == [285, 294]
    assert idx == sorted(idx)


def test_dense_positions_of_the_defaults():
    assert dense_positions(32, 4) == [3, 10, 18, 26]
    assert dense_positions(50, 4) == [5, 17, 29, 42]
    sparse = sparse_indices(300, 32)
    assert [sparse[d] for d in dense_positions(32, 4)] == [32, 97, 172, 247]


@pytest.mark.parametrize("n", [1, 5, 20, 31, 32])
def test_short_video_repeats_frames_to_fill_every_slot(n):
    idx = sparse_indices(n, 32)
    assert len(idx) == 32
    assert set(idx) == set(range(n))
    assert idx == sorted(idx)


def test_short_video_repeats_match_the_official_rule():
    assert sparse_indices(1, 32) == [0] * 32
    assert sparse_indices(20, 32)[:8] == [0, 0, 1, 1, 2, 3, 3, 4]
    assert sparse_indices(32, 32) == list(range(32))
    assert uniform_sample(20, 12) == [0, 1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18]


def test_invalid_counts_are_rejected_with_a_clear_error():
    with pytest.raises(InvalidSettings, match="no frames"):
        sparse_indices(0, 32)
    with pytest.raises(InvalidSettings, match="at least T_dense"):
        dense_positions(4, 4)
    with pytest.raises(InvalidSettings):
        dense_positions(8, 0)


def test_visual_token_count():
    assert num_visual_tokens(32, 4) == 2336
