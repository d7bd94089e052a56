"""The kit's own tests start real `ipcmatrix run`s; on GitHub Actions they must not each
append a summary to the job's step summary, which belongs to the job's own run."""
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def no_step_summary_from_test_runs():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        yield


@pytest.fixture(scope="session")
def probes_anyone_can_import():
    """A directory holding a copy of the probes package (``probes/``) that every user may read.

    Tests that run a probe as uid 65534 cannot reach a checkout under a 0700 directory (a
    home directory, /root, ``mktemp -d``): the copy lives in a world-readable /tmp directory,
    and ``python -m probes.<family>`` run from it is exactly a probe run in a checkout.
    """
    import ipcmatrix.probes

    root = Path(tempfile.mkdtemp(prefix="ipcmatrix-kit-", dir="/tmp"))
    try:
        shutil.copytree(Path(ipcmatrix.probes.__file__).parent, root / "probes",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
