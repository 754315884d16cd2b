import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """t-SNE's OpenMP loop on a few dozen points is far slower with threads competing for two busy cores."""
    with threadpool_limits(limits=1):
        yield
