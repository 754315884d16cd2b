import pytest


@pytest.fixture(autouse=True)
def _one_openmp_thread(one_openmp_thread: None) -> None:
    """Every figure test here runs t-SNE or draws; see tests/conftest.py."""
