"""Obtain real MNIST offline, in Keras's ``mnist.npz`` layout."""
