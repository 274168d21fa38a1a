"""The training loop, its step, distribution over devices and machines, and the run folder."""
