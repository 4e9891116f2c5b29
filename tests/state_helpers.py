"""Comparing two PPO run directories' saved trainer state, tensor by tensor."""

import torch
from safetensors.torch import load_file


def assert_same_state(straight_dir, resumed_dir, names) -> None:
    """Every tensor of every `names` file under state/ is identical in the two runs."""
    for name in names:
        straight = load_file(str(straight_dir / "state" / name))
        resumed = load_file(str(resumed_dir / "state" / name))
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"{name}:{key} differs"
