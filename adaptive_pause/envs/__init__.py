"""Environments: the analytic pause environment (exact optimum, the RL test bench) and gymnasium views of the
decode loop.

Must not: train anything.
"""
