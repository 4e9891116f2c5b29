"""Pause controllers behind one interface (`PausePolicy`): the learned head and the baselines.

A small torch-only library: it never imports `adaptive_pause`.
"""

from .base import EMIT, PAUSE, ControllerInputs, Decision, PausePolicy
from .baselines import ConfidenceThreshold, FixedPauses, RandomPauses
from .head import PauseControllerHead
from .planning import PausePlanningHead
from .outcome import OutcomePlanner, fit_outcome_head
from .io import POLICY_TYPES, load_policy, save_policy
from .urgency import UrgencyEstimator, load_estimator, save_estimator

__all__ = ["EMIT", "PAUSE", "ControllerInputs", "Decision", "PausePolicy", "ConfidenceThreshold", "FixedPauses",
           "RandomPauses", "PauseControllerHead", "PausePlanningHead", "OutcomePlanner", "fit_outcome_head", "POLICY_TYPES", "load_policy", "save_policy",
           "UrgencyEstimator", "load_estimator", "save_estimator"]
