"""ipcmatrix: measure how this OS does UNIX IPC, and compare it with what others do."""
__version__ = "0.1.0"
