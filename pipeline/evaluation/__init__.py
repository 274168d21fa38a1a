"""Metrics with intervals, the evaluation folder, evaluate, compare, and expert labels."""
