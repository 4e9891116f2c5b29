"""Controller PPO: `config` (PPOConfig), `algorithm` (storage, GAE, RLOO, loss, update), `sources` (rollouts
from the analytic env and the decode loop), `checkpoint` (safetensors + JSON state, exact resume),
`trainer` (the Accelerate run loop and `adaptive-pause train-controller`).

Must not: implement a decode loop, a controller or a reward.
"""
