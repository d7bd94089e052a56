"""SO_RCVTIMEO, SO_SNDTIMEO and poll timeouts (never early, late within the platform's
tolerance), each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_timeouts = conformance_tests("timeouts")
