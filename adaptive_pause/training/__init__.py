"""Supervised training stages: the shared Accelerate loop, collators, pause-pretraining, LoRA pause-finetuning.

Must not: decode free-running text (that is `decoding/`) or train controllers (that is `ppo/`).
"""
