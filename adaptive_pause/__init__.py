"""adaptive-pause: adaptive, urgency-controlled compute for causal LMs with learnable <pause> tokens."""

__version__ = "0.1.0"
