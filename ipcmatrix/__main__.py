"""``python -m ipcmatrix``: the ``ipcmatrix`` command."""
import sys

from ipcmatrix.start import main

sys.exit(main())
