"""Shard the MNIST training set into one file per worker."""
