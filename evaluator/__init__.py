"""The accuracy test: evaluate a model on the 10k MNIST test set."""
