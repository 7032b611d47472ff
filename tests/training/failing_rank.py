"""A data-parallel training whose rank 1 fails at its second step (tests/training/test_distributed.py)."""
import os
import sys

import braintumor.training.trainer as trainer
from braintumor.cli import main
from braintumor.errors import BrainTumorError

if os.environ.get("RANK") == "1":
    real, calls = trainer.batch_loss, [0]

    def batch_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise BrainTumorError("planted failure on rank 1", "this is what the test expects")
        return real(*args, **kwargs)

    trainer.batch_loss = batch_loss
sys.exit(main(sys.argv[1:]))
