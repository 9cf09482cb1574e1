"""Train one worker's shard for one round, starting from the round's shared global model."""
