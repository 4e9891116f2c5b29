"""Evaluation: `eval-pauses` (teacher-forced accuracy at fixed k), urgency sweeps, their tables and plots.

Must not: train anything or implement decoding.
"""
