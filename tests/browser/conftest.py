import sys
from pathlib import Path

# The demo's process helpers (demostack, featurestack).
_INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(_INTEGRATION / "features"))
sys.path.insert(0, str(_INTEGRATION / "demo"))
