from collections.abc import Iterator
from pathlib import Path

import pytest
from support.redis_nodes import Nodes, free_port_pair


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    """Nodes of the chart's Redis Cluster on local redis-server processes, stopped after."""
    found = Nodes(tmp_path, free_port_pair())
    yield found
    found.stop()
