"""Named AF_UNIX sockets (file, name length, connect errors, abstract, autobind), each
checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_names = conformance_tests("names")
