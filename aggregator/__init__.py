"""FedAvg over the trainers' h5 weights, with h5py and numpy only (no TensorFlow)."""
