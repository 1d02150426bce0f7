import warnings

import pytest

from rtvos.models import RandomWeightsWarning


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    # Tests use untrained models on purpose; the warning is asserted where it matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield
