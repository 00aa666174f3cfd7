"""`mypy --strict`, with no config of ours, on the SDK and on every example of its README.

`scripts/check-sdk-types` (also run by `make typecheck`) extracts the README's ```python blocks
into a scratch folder and checks them and the `interesttree` package as a user's project
would. tests/clients/test_sdk_floor.py runs it against the SDK's minimum versions too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-sdk-types"


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("check_sdk_types", str(SCRIPT))
    spec = importlib.util.spec_from_loader("check_sdk_types", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_readme_blocks_are_extracted() -> None:
    blocks = _script().readme_blocks()
    assert blocks, "the SDK README has no python block"
    assert all("interesttree" in block for block in blocks)


def test_mypy_strict_passes_on_the_sdk_and_its_readme_examples() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Success: no issues found") == 2, result.stdout


def test_mypy_strict_fails_on_a_wrongly_typed_example(tmp_path: Path) -> None:
    """The check has teeth: a README example that passes a str for a Timestamp fails."""
    readme = tmp_path / "README.md"
    readme.write_text(
        "```python\nfrom interesttree.v1 import interest_pb2\n\n"
        'interest_pb2.Event(user="users/u", event_time="yesterday")\n```\n'
    )
    blocks = _script().readme_blocks(readme)
    example = tmp_path / "example.py"
    example.write_text(blocks[0])
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "", example.name],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert 'incompatible type "str"' in result.stdout
