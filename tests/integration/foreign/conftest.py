import sys
from pathlib import Path

# The process helpers (featurestack) and the browser-like login (demostack) live next to the
# feature and demo tests.
_INTEGRATION = Path(__file__).resolve().parents[1]
for _name in ("features", "demo"):
    if str(_INTEGRATION / _name) not in sys.path:
        sys.path.insert(0, str(_INTEGRATION / _name))
