"""Training: the named optimizers and schedules (optim), the loop and checkpoints."""

from cnnzoo.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler"]
