"""eval-pauses' one-pass exact-match check agrees, example by example, with the decode loop."""

import pytest
import torch

from adaptive_pause.training.finetune import FinetuneConfig
from adaptive_pause.training.pretrain import PretrainConfig
from adaptive_pause.eval.eval_pauses import greedy_correct, load_run
from adaptive_pause.training.finetune import run_finetune
from adaptive_pause.modeling import AdaptivePauseModel
from adaptive_pause.training.pretrain import run_pretrain
from adaptive_pause.tasks import get_task
from policies import FixedPauses
from helpers import tiny_model



@pytest.mark.parametrize("numbering,countdown", [("slotted", False), ("contiguous", False), ("slotted", True)])
def test_teacher_forced_exact_match_equals_greedy_decoding(tmp_path, numbering, countdown):
    run_pretrain(PretrainConfig(output_dir=str(tmp_path / "pre"), tasks=["addition:1-1"], max_steps=100,
                                batch_size=64, learning_rate=1e-2, warmup_steps=5, progress=False,
                                model=tiny_model(position_numbering=numbering, pause_countdown=countdown)))
    run_finetune(FinetuneConfig(output_dir=str(tmp_path / "ft"), base_model=str(tmp_path / "pre"),
                                tasks=["addition:1-1"], max_pauses=4, max_steps=20, batch_size=64, progress=False))
    task = get_task("addition:1-1")
    examples = task.examples(64, 11)
    run = load_run(tmp_path / "ft")
    model = AdaptivePauseModel.from_pretrained(tmp_path / "ft")
    agreements = []
    for k in (0, 1, 4):
        fast = greedy_correct(run, examples, k, 32)
        out = model.generate([e.prompt for e in examples], urgency=0.0, policy=FixedPauses(k), max_new_tokens=4,
                             max_pauses=8)
        slow = torch.tensor([task.score(t, e.answer) == 1.0 for t, e in zip(out.texts, examples)])
        assert torch.equal(fast, slow), k
        agreements.append(fast.float().mean().item())
    assert max(agreements) > 0  # the model answers some correctly, so the comparison is not vacuous
