"""A probe that leaves a daemon behind: a grandchild in its own session, then exits cleanly."""
import json
import os
import signal

if os.fork() == 0:
    os.setsid()                 # leave the probe's process group and session
    if os.fork() == 0:
        signal.pause()          # the daemon: lives until someone kills it
    os._exit(0)
os.wait()
print(json.dumps({"family": "broken", "observations": {"broken.ok": {"value": "ok"}}}))
