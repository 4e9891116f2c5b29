"""Tiny, deliberately *opinionated* untrained LMs for decode-loop tests.

A freshly initialised tiny Llama (std 0.02) predicts nearly the same token
everywhere, which would make equivalence tests vacuous; re-drawing the matrices
with a larger std makes greedy outputs depend on the context.
"""

import torch

from adaptive_pause.config import ModelConfig
from adaptive_pause.modeling import AdaptivePauseModel, load_lm

PROMPTS = ["12+34=", "7+5=", "123+456=", "9+99="]


def opinionated_lm(numbering: str = "contiguous", seed: int = 1, hidden: int = 32, pause_slots: int = 8):
    model, tokenizer = load_lm(ModelConfig(hidden_size=hidden, num_layers=2, num_heads=2, intermediate_size=64,
                                           position_numbering=numbering, pause_slots=pause_slots,
                                           max_position_embeddings=512), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.25)
    return model.eval(), tokenizer


def opinionated_model(numbering: str = "contiguous", seed: int = 1, policy=None, **kwargs) -> AdaptivePauseModel:
    model, tokenizer = opinionated_lm(numbering, seed, **kwargs)
    return AdaptivePauseModel(model, tokenizer, policy)


def decisive_head(hidden: int, seed: int = 0, use_top_prob: bool = True, prompt_summary: bool = False):
    """A PauseControllerHead whose untrained decisions vary with the state and are far from the 0.5 boundary."""
    from policies import PauseControllerHead

    torch.manual_seed(seed)
    head = PauseControllerHead(hidden, width=16, use_top_prob=use_top_prob, prompt_summary=prompt_summary)
    with torch.no_grad():
        head.out.weight[0].normal_(0, 3.0)
    return head.eval()
