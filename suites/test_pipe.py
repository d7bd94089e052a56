"""Pipe observations (and sync.pipe_token), each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_pipe = conformance_tests("pipe")
