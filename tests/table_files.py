"""Small expectation tables written for a test, and the problems the loader finds in them."""
import textwrap

import pytest

from ipcmatrix import expectations


class TableFiles:
    """Tables of one platform (``system``) written under ``directory``, checked against ``known``."""

    def __init__(self, directory, system, name, known):
        self.directory, self.name, self.known = directory, name, known
        self.header = f'[platform]\nsystem = "{system}"\n'

    def write(self, body, name=None):
        path = self.directory / (name or self.name)
        path.write_text(self.header + textwrap.dedent(body))
        return path

    def problems_in(self, path):
        with pytest.raises(expectations.TableError) as caught:
            expectations.load(path, known_keys=self.known)
        return caught.value.problems
