"""A probe that writes far more output than any report needs, then hangs."""
import os
import signal

chunk = b"x" * (1 << 20)
for _ in range(64):
    os.write(1, chunk)
signal.pause()
