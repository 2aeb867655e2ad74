"""A training job killed mid-run, for the resume tests of pre-training, SUITS training and
VoxelMorph training."""


class Killed(Exception):
    """Stands for a job killed mid-run (raised by the callback of :func:`kill_at`)."""


def kill_at(step_to_kill):
    """A ``log`` callback of the trainers that stops the run in step ``step_to_kill``."""

    def log(step, loss):
        if step == step_to_kill:
            raise Killed

    return log
