"""A probe that ends the way $ENDS_HOW says, to compare a forked probe's exit with an exec'd one's."""
import atexit
import os
import sys
import threading
import time

how = os.environ["ENDS_HOW"]
atexit.register(lambda: print("atexit ran", file=sys.stderr, flush=True))
if how == "thread":
    # A thread still working when the module ends: the interpreter waits for it.
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished", flush=True))).start()
    print('{"observations": {}}', flush=True)
elif how == "status":
    sys.exit(3)
elif how == "message":
    sys.exit("gave up: no room")
elif how == "raises":
    raise RuntimeError("a probe bug")
