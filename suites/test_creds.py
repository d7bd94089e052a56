"""Peer credentials (SO_PEERCRED or LOCAL_PEERCRED, SCM_CREDENTIALS), each checked against
this platform's table."""
from ipcmatrix.suite import conformance_tests

test_creds = conformance_tests("creds")
