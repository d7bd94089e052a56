"""AF_UNIX SOCK_SEQPACKET observations, each checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_seqpacket = conformance_tests("seqpacket")
