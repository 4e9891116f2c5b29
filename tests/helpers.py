"""Shared test helpers: the tiny model shape, tiny training runs, opinionated untrained LMs and heads, the
`accelerate launch` command, and run-state comparisons.

A freshly initialised tiny Llama (std 0.02) predicts nearly the same token everywhere, which would make
equivalence tests vacuous; `opinionated_lm` re-draws the matrices with a larger std so that greedy outputs
depend on the context.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from adaptive_pause.modeling import AdaptivePauseModel, ModelConfig, load_lm

REPO = Path(__file__).resolve().parents[1]
# The tiny model every training test builds (0.04M parameters): seconds per stage on one CPU thread.
TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, pause_slots=8)
FAST = dict(max_steps=6, batch_size=16, warmup_steps=1, log_every=3, progress=False)


def tiny_model(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def tiny_pipeline(root: Path, tasks: list[str], numbering: str = "slotted", max_pauses: int = 3, **fast) -> Path:
    """pretrain -> LoRA finetune of the tiny model into root/pre and root/ft; returns root/ft."""
    from adaptive_pause.training.finetune import FinetuneConfig, run_finetune
    from adaptive_pause.training.pretrain import PretrainConfig, run_pretrain

    steps = {**FAST, **fast}
    run_pretrain(PretrainConfig(output_dir=str(root / "pre"), tasks=tasks,
                                model=tiny_model(position_numbering=numbering), **steps))
    run_finetune(FinetuneConfig(output_dir=str(root / "ft"), base_model=str(root / "pre"), tasks=tasks,
                                max_pauses=max_pauses, lora_r=4, **steps))
    return root / "ft"


def launch_command(args: list[str], processes: int = 2, port: int | None = None,
                   fsdp: bool = False) -> tuple[list[str], dict]:
    """(command, environment) of `accelerate launch` of `python -m adaptive_pause.cli ARGS` on `processes` CPU
    processes (gloo; with 1, a plain single process under the launcher); with `fsdp`, through tests/fsdp_cpu.py,
    which turns Accelerate's FSDP2 on."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:  # on a machine without GPUs this starts CPU processes talking over gloo
        command.append("--multi_gpu")
    if port is not None:
        command += ["--main_process_port", str(port)]
    command += [str(REPO / "tests" / "fsdp_cpu.py")] if fsdp else ["-m", "adaptive_pause.cli"]
    return command + list(args), env


def accelerate_launch(args: list[str], processes: int = 2, port: int | None = None, timeout: int = 600,
                      fsdp: bool = False) -> subprocess.CompletedProcess:
    """Run `launch_command(...)` to its end."""
    command, env = launch_command(args, processes, port, fsdp)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def assert_same_state(straight_dir, resumed_dir, names) -> None:
    """Every tensor of every `names` file under state/ is identical in the two runs."""
    for name in names:
        straight = load_file(str(straight_dir / "state" / name))
        resumed = load_file(str(resumed_dir / "state" / name))
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"{name}:{key} differs"

PROMPTS = ["12+34=", "7+5=", "123+456=", "9+99="]


def opinionated_lm(numbering: str = "contiguous", seed: int = 1, hidden: int = 32, pause_slots: int = 8):
    model, tokenizer = load_lm(tiny_model(hidden_size=hidden, position_numbering=numbering, pause_slots=pause_slots,
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


BPE_EOS = "<|endoftext|>"


def bpe_tokenizer():
    """A small byte-level BPE (GPT-2 style) trained here, with an EOS but neither `<pause>` nor a pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["What is the answer to one plus two? Three.", "Count to ten: one two three four five six seven",
              "12+34=46 7+5=12 123+456=579 2+2=4", "Hello there, hi! The quick brown fox jumps over the lazy dog."]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=[BPE_EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=BPE_EOS, clean_up_tokenization_spaces=False)


def tiny_llama_dir(path):
    """A tiny config-built Llama (3 layers, hidden 32) and `bpe_tokenizer`, saved to `path/lm` as a local HF
    directory (what the urgency benchmarks read with `--model`); returns (model, tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path / "lm")
    tokenizer.save_pretrained(path / "lm")
    return model, tokenizer
