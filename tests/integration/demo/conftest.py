import sys
from pathlib import Path

# featurestack (the process helpers) lives next to the feature tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
