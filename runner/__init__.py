"""The local runner: the whole federated pipeline on one machine, processes instead of pods."""
