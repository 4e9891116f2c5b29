import pytest
import torch

from adaptive_pause.positions import advance, initial_state, next_position_ids, position_ids

P = 4  # pause id


def test_contiguous_matches_hf_default_on_left_padding():
    ids = torch.tensor([[0, 0, 7, 8, P, 9], [7, 8, 9, P, P, 9]])
    mask = (ids != 0).long()
    pos = position_ids(ids, mask, P, "contiguous", 4)
    assert pos.tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]


def test_slotted_positions_do_not_depend_on_pauses_before():
    slots = 3
    block = slots + 1
    plain = torch.tensor([[7, 8, 9, 5, 6]])
    paused = torch.tensor([[7, 8, 9, P, P, 5, P, 6]])
    pos_plain = position_ids(plain, torch.ones_like(plain), P, "slotted", slots)[0]
    pos_paused = position_ids(paused, torch.ones_like(paused), P, "slotted", slots)[0]
    # the real tokens keep their positions whatever pauses came before them
    assert pos_paused[paused[0] != P].tolist() == pos_plain.tolist()
    # pause j before a token sits at slot j of that token's block
    assert pos_paused.tolist() == [3, 7, 11, 12, 13, 15, 16, 19]
    assert pos_plain.tolist() == [block * i + slots for i in range(5)]


def test_slotted_rejects_runs_longer_than_slots():
    ids = torch.tensor([[7, P, P, P, 8]])
    with pytest.raises(ValueError, match="pause_slots=2"):
        position_ids(ids, torch.ones_like(ids), P, "slotted", 2)


@pytest.mark.parametrize("numbering", ["contiguous", "slotted"])
def test_incremental_positions_equal_whole_sequence(numbering):
    ids = torch.tensor([[0, 0, 7, 8, P, 9, P, P, 5, 6], [7, P, 8, 9, 5, P, P, P, 6, P]])
    mask = (ids != 0).long()
    full = position_ids(ids, mask, P, numbering, 4)
    cut = 5
    state = initial_state(ids[:, :cut], mask[:, :cut], P)
    steps = []
    for t in range(cut, ids.shape[1]):
        is_pause = ids[:, t] == P
        steps.append(next_position_ids(state, is_pause, numbering, 4))
        state = advance(state, is_pause)
    assert torch.equal(torch.stack(steps, 1), full[:, cut:])


def test_unknown_numbering():
    ids = torch.tensor([[7]])
    with pytest.raises(ValueError, match="position_numbering must be one of"):
        position_ids(ids, ids, P, "rotary", 2)
