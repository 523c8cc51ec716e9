import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cli_helpers import tiny_model  # noqa: F401 - the session fixture
