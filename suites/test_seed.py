"""The course notes' recv-unix / send-unix example, checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_seed = conformance_tests("seed")
