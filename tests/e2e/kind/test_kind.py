"""The shared e2e scenarios against a Helm release on kind (run by `make e2e-kind`).

scripts/e2e-kind.sh creates the cluster, loads the images, installs the chart and sets E2E_KIND=1;
under a plain pytest run these tests are skipped.
"""

import os

import pytest

from .. import scenarios
from ..kube_stack import KubeStack

pytestmark = [
    pytest.mark.skipif(not os.environ.get("E2E_KIND"),
                       reason="needs a kind cluster: run make e2e-kind"),
    pytest.mark.timeout(900),
]


@pytest.fixture
def stack():
    return KubeStack(
        base_url=os.environ.get("E2E_BASE_URL", "http://127.0.0.1:18080"),
        namespace=os.environ.get("E2E_NAMESPACE", "fleet-e2e"),
        release=os.environ.get("E2E_RELEASE", "fleet"),
        kubectl=os.environ.get("KUBECTL", "kubectl"),
    )


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
async def test_scenario(stack, scenario):
    result = await scenario(stack)
    print(f"{scenario.__name__}: {result}")
