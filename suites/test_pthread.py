"""Process-shared pthread mutexes and condition variables, checked against this platform's table."""
from ipcmatrix.suite import conformance_tests

test_pthread = conformance_tests("pthread")
