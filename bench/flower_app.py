"""The same federated work in Flower's simulation, for bench.flower_ab: our model, split, schedule and seeds.

    .venv-flower/bin/python -m bench.flower_app --data volume/data/mnist.npz [--clients 3 --rounds 3]

Runs only in the benchmark's own venv (bench/flower-requirements.txt). Like our runner, each of the
clients trains one epoch per round (batch 64, the round's learning rate, a fresh optimizer) and the
server evaluates the FedAvg result on the 10k test images after every round. Each Ray worker keeps its
compiled model between rounds and trains with our trainer's loop (trainer.train.train_epochs), as our
trainer processes do, so the two compare the frameworks around the training, not the training.
Prints the final accuracy as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from common.data import load_mnist, to_model_input
    from evaluator.metrics import classification_metrics
    from splitter.split import split_indices

    test_set = load_mnist(args.data)
    shards = split_indices(test_set.y_train, args.clients, "iid", 0.5, args.seed)
    accuracies: list[float] = []

    def kept_data():
        """MNIST loaded once per Ray worker process (not shipped with the app to every worker)."""
        if not hasattr(kept_data, "mnist"):
            kept_data.mnist = load_mnist(args.data)
        return kept_data.mnist

    def kept_model():
        """One compiled model per Ray worker process, kept between the clients it runs."""
        from common.model import build_model

        if not hasattr(kept_model, "model"):
            kept_model.model = build_model()
        return kept_model.model

    class MnistClient(NumPyClient):
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters, config):
            from common.model import learning_rate_for_round
            from trainer.train import client_seed, reset_training_state, train_epochs

            model = kept_model()
            model.set_weights(parameters)
            seed = client_seed(args.seed, int(config["round"]), self.partition)
            reset_training_state(model, learning_rate_for_round(int(config["round"])), seed)
            indices, mnist = shards[self.partition], kept_data()
            train_epochs(model, to_model_input(mnist.x_train[indices]), mnist.y_train[indices], args.epochs,
                         args.batch_size, shuffle_seed=seed)
            return model.get_weights(), len(indices), {}

    def client_fn(context: Context):
        return MnistClient(int(context.node_config["partition-id"])).to_client()

    server_models = []  # the server's own model, apart from the clients' (which ship to the Ray workers)

    def evaluate(server_round, parameters, config):
        from common.model import build_model

        if server_round == 0:
            return None
        if not server_models:
            server_models.append(build_model())
        model = server_models[0]
        model.set_weights(parameters)
        probabilities = model.predict(to_model_input(test_set.x_test), batch_size=1000, verbose=0)
        metrics = classification_metrics(probabilities, test_set.y_test)
        accuracies.append(metrics["accuracy"])
        return metrics["loss"], {"accuracy": metrics["accuracy"]}

    def server_fn(context: Context):
        from common.model import build_model

        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.clients,
            min_available_clients=args.clients, evaluate_fn=evaluate,
            on_fit_config_fn=lambda server_round: {"round": server_round},
            initial_parameters=ndarrays_to_parameters(build_model(seed=args.seed).get_weights()),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
        num_supernodes=args.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    print(json.dumps({"accuracy": accuracies[-1] if accuracies else None, "history": accuracies}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
