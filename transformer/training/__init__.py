"""Training: losses, optimizers, stages, checkpoints and the train loop."""
