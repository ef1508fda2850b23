"""Choosing a variant: the candidate space, the Pareto frontier, and ``select``."""
