"""A probe that forgets to remove a socket file it made."""
import json
import socket

socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind("forgotten")
print(json.dumps({"family": "broken", "observations": {"broken.ok": {"value": "ok"}}}))
