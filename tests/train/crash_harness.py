"""Run ``appo train`` in this process, optionally SIGKILLing ourselves in the middle of writing the
N-th checkpoint (after its files are written, before the rename that publishes it).

Usage: python crash_harness.py CONFIG_YAML [KILL_AT_CHECKPOINT_WRITE]
"""

import os
import signal
import sys

import appo.train.checkpoint as checkpoint
from appo.config import load_config
from appo.train.trainer import train

if len(sys.argv) > 2:
    kill_at, calls = int(sys.argv[2]), [0]
    real_fsync_tree = checkpoint._fsync_tree

    def fsync_then_die(root):
        real_fsync_tree(root)
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint._fsync_tree = fsync_then_die

train(load_config(sys.argv[1]))
