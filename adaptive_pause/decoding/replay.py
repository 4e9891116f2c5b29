"""The teacher-forced replay of a finished decode: one forward pass that reproduces what the loop saw.

Owns: `source_columns` (which column's output each step read), `teacher_forced` (hidden states as the
controller read them and the masked next-token logits, at every step, with gradients if wanted), and
`token_log_probs`. Joint LoRA + controller PPO uses it; tests hold it equal to the loop's own records.

Must not: decode (the loop in `loop.py` is the only token loop) or know about PPO's losses.
"""

from __future__ import annotations

import torch

from ..countdown import lm_inputs
from .forward import forward_last_hidden
from .trace import controller_features, mask_pause, masked_mean


def source_columns(attention_mask: torch.Tensor, prompt_len: int, steps: int) -> torch.Tensor:  # (rows, steps)
    """For each step, the last real column before the step's own token (prompt_len + t): its output is the
    hidden state and the logits the decode loop acted on. Left padding keeps the prompt's last column real."""
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    last_real = torch.cummax(torch.where(attention_mask.bool(), columns, -1), dim=1).values  # (rows, length)
    return last_real[:, prompt_len - 1: prompt_len - 1 + steps]


def teacher_forced(lm, sequences: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                   columns: torch.Tensor, pause_id: int, prompt_summary: bool = False,
                   countdown: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over whole decoded sequences: (features (rows, steps, feature width), logits (rows,
    steps, vocab)).

    sequences, attention_mask, positions: (rows, length); columns: (rows, steps) from `source_columns`;
    countdown: (rows, length), the countdown inputs the loop fed (`DecodeResult.countdown`), for a model with one.
    Features are the controller's, built as the loop builds them (`controller_features`): the last layer's
    hidden state, with `prompt_summary` also the mean over the prompt columns. Logits are float with
    `<pause>` masked out, as an emit sees them. The output head runs on the gathered steps only, not on
    every column (the decode loop's fast path relies on the same identity, checked there per prompt).
    """
    _, full = forward_last_hidden(lm, **lm_inputs(lm, sequences, countdown), attention_mask=attention_mask,
                                  position_ids=positions, use_cache=False, logits_to_keep=1)  # (rows, length, hidden)
    hidden = full.gather(1, columns[..., None].expand(-1, -1, full.shape[-1]))  # (rows, steps, hidden)
    logits = mask_pause(lm.get_output_embeddings()(hidden).float(), pause_id)  # (rows, steps, vocab)
    summary = None
    if prompt_summary:
        prompt_len = sequences.shape[1] - columns.shape[1]  # left-padded prompt, then one column per step
        summary = masked_mean(full[:, :prompt_len], attention_mask[:, :prompt_len])  # (rows, hidden)
    return controller_features(hidden, summary), logits


def token_log_probs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:  # (rows, steps)
    """log softmax(logits) at token_ids; logits (rows, steps, vocab) with <pause> masked (temperature 1)."""
    return logits.log_softmax(-1).gather(-1, token_ids[..., None]).squeeze(-1)
