"""Unix socket, TCP loopback and pipe speed ratios, each checked loosely against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_speed = conformance_tests("speed")
