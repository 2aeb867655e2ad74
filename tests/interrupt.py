"""A training job killed mid-run, for the resume tests of pre-training and SUITS training."""


class Killed(Exception):
    """Stands for a job killed after step 5 (raised by :func:`kill_at_5`)."""


def kill_at_5(step, loss):
    """A ``log`` callback of the trainers that stops the run after its fifth step."""
    if step == 5:
        raise Killed
