"""The generated actions-and-reasons reference is current with the table in reasons.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "gen_policy_docs.py"


def test_generated_reference_is_current() -> None:
    """``gen_policy_docs.py --check`` passes on the committed file."""
    spec = importlib.util.spec_from_file_location("gen_policy_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert 0 == module.main(["--check"])
