"""The training loop and its run folder.

    trainer.py        Trainer: the loop (AMP, channels-last, DDP, validation, checkpoints, progress bar, probe)
    budget.py         budgets: parsing, probing, resolving to iterations, interleaved cost measurement
    schedule.py       learning-rate schedule, `Every` intervals, the autocast dtype
    checkpoint.py     checkpoint files: save, load (weights_only), rebuild the model, the training data
    resume.py         resuming an interrupted run from last.pt
    run_lock.py       one process writes a run folder
    distributed.py    torchrun / DDP environment, device choice, collectives
    child_process.py  a training run as a child process (used by train.compare)
    console.py        rank-0 logging
"""
