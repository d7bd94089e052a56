"""SCM_RIGHTS fd passing observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_fdpass = conformance_tests("fdpass")
