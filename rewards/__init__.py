"""Urgency-conditioned rewards and their per-step decomposition (torch only; never imports `adaptive_pause`)."""

from .base import REWARDS, DeadlineReward, DiscountedReward, MetaReward, Reward, make_reward

__all__ = ["REWARDS", "DeadlineReward", "DiscountedReward", "MetaReward", "Reward", "make_reward"]
