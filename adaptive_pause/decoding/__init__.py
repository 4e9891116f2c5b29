"""The one batched, KV-cached decode loop: at every step each unfinished row appends `<pause>` or an answer token.

Generation, PPO rollouts, the gymnasium env, sweeps (and the server) all run it. The package's parts:
`config` (DecodeConfig, the one pause-budget rule), `cache` (preallocated KV cache), `trace` (named per-step
records, results, the feature and pause-mask rules), `session` (prefill, single-token step, urgency and
cancel, result), `multi_token` (chunked and speculative pauses), `interrupt` (text arriving mid-answer),
`loop` (policy-driven runs), `replay` (the teacher-forced pass that reproduces a decode), `batching` (rows
joining and leaving a running session).

Must not: know about tasks, rewards, PPO updates or files.
"""

from .config import DecodeConfig, UrgencyLike, UrgencySchedule, as_urgency, pause_budget
from .interrupt import Interruption
from .loop import check_policy_reads, decode, run_policy
from .session import DecodeSession
from .trace import FINISH_NAMES, DecodeResult, DecodeTrace, StepRecord

__all__ = ["DecodeConfig", "DecodeResult", "DecodeSession", "DecodeTrace", "FINISH_NAMES", "Interruption", "StepRecord",
           "UrgencyLike", "UrgencySchedule", "as_urgency", "check_policy_reads", "decode", "pause_budget",
           "run_policy"]
