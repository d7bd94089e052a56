"""A probe that records one key, then blocks forever (the runner must kill it)."""
import json
import os
import signal

with open(os.environ["IPCMATRIX_PROGRESS"], "a") as progress:
    progress.write(json.dumps({"broken.before_hang": {"value": "ok"}}) + "\n")
signal.pause()
