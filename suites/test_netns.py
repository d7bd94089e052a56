"""A fresh network namespace (abstract names, dgram capacity at the netns defaults), each
checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_netns = conformance_tests("netns")
