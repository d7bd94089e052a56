"""A probe killed by SIGKILL (as the OOM killer would) after recording one key."""
import json
import os
import signal

with open(os.environ["IPCMATRIX_PROGRESS"], "a") as progress:
    progress.write(json.dumps({"broken.measured": {"value": 1}}) + "\n")
os.kill(os.getpid(), signal.SIGKILL)
