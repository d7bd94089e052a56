"""Readiness-event observations (poll, select, epoll, kqueue), each checked against this
platform's table."""
from ipcmatrix.suite import conformance_tests

test_events = conformance_tests("events")
