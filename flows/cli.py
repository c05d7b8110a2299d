"""What the flows' console scripts share: run the flow locally, print its result or why it failed."""

from __future__ import annotations

import json
import sys
from typing import Any


def run_and_report(flow: Any, **parameters: Any) -> int:
    """Exit status 0 with the result as JSON on stdout, or 1 with the failure message on stderr."""
    state = flow(**parameters, return_state=True)
    if state.is_failed():
        print(f"{flow.name} failed: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), indent=2, default=str))
    return 0
