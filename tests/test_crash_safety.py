"""A process killed with SIGKILL while writing checkpoints leaves every earlier checkpoint loadable."""

import os
import signal
import subprocess
import sys
import time

import pytest

from nexlify.agent.dqn import AdaptiveDQNAgent

WRITER = """
import sys
import numpy as np
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
agent = AdaptiveDQNAgent(12, 3, TrainingConfig(model_size="xlarge", buffer_size=200_000))
states = np.random.default_rng(0).standard_normal((200_000, 12)).astype(np.float32)
agent.remember_batch(states, np.zeros(200_000, dtype=np.int64), np.zeros(200_000, dtype=np.float32), states,
                     np.zeros(200_000, dtype=bool))
folder = sys.argv[1]
i = 0
while True:  # each file is ~20 MB, so a kill lands mid-write most of the time
    i += 1
    agent.save(f"{folder}/checkpoint_ep{i}.pth", include_replay=True)
    print(i, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_write_leaves_earlier_checkpoints_loadable(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    written = 0
    deadline = time.time() + 120
    while written < 2 and time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        written = int(line)
    time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert written >= 2, "the writer did not get going"
    files = sorted(tmp_path.glob("checkpoint_ep*.pth"))
    assert len(files) >= written
    for path in files:
        agent = AdaptiveDQNAgent.from_checkpoint(path)
        assert agent.config.model_size == "xlarge"
        assert len(agent.replay) == 200_000
