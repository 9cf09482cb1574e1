"""Aggregation of the trainers' h5 weights (FedAvg, server optimizers, robust statistics) with h5py and numpy only."""
