"""The kit's own tests start real `ipcmatrix run`s; on GitHub Actions they must not each
append a summary to the job's step summary, which belongs to the job's own run."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def no_step_summary_from_test_runs():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        yield
