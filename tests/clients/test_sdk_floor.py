"""The Python SDK on the oldest versions it declares, installed from the package registry.

A backend that pins old protobuf or grpcio must be able to install and import the SDK. The
declared floors (`name>=X` in clients/python/pyproject.toml) are installed exactly (`name==X`)
into a throwaway venv, with the SDK's own wheel, and the README's example and an asyncio call
then run in that venv against a running server. The wheels are kept in a cache folder
(`INTEREST_TREE_WHEEL_CACHE`, by default ~/.cache/interest-tree/wheels), so only the first
run downloads them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from ..conftest import RunningServer

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "python"
WHEEL_CACHE = Path(
    os.environ.get("INTEREST_TREE_WHEEL_CACHE", Path.home() / ".cache" / "interest-tree" / "wheels")
)

ASYNC_CHECK = """
import asyncio, os, sys
import grpc
from google.protobuf import __version__ as protobuf_version
from interesttree import AsyncInterestTreeClient, NotFoundError, item_name

async def main() -> None:
    async with AsyncInterestTreeClient(os.environ["INTEREST_TREE_TARGET"]) as client:
        names = [item.name async for item in client.iter_items(page_size=2)]
        print("items:", len(names))
        try:
            await client.get_item(item_name("no-such-item"))
        except NotFoundError as error:
            print("not found:", error.reason, error.resource_name)
    print("versions:", grpc.__version__, protobuf_version)

asyncio.run(main())
"""


def declared_floors() -> dict[str, str]:
    """Every `name>=version` requirement of the SDK, as name -> version."""
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", requirement)
        assert found, f"{requirement!r}: the SDK states each dependency as name>=floor"
        floors[found.group(1)] = found.group(2)
    return floors


def _pip(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _install_floors(python: Path, pins: list[str], sdk_wheels: Path) -> None:
    local = ["--no-index", "--find-links", str(WHEEL_CACHE), "--find-links", str(sdk_wheels)]
    command = ["--python", str(python), "install", "--quiet", "--only-binary=:all:"]
    installed = _pip(*command, *local, "interesttree-client", *pins)
    if installed.returncode != 0:
        # Not (all) in the cache yet: fetch the exact floors, then install from the cache.
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        downloaded = _pip(
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(WHEEL_CACHE),
            *pins,
        )
        assert downloaded.returncode == 0, downloaded.stderr
        installed = _pip(*command, *local, "interesttree-client", *pins)
    assert installed.returncode == 0, installed.stderr


@pytest.fixture(scope="module")
def floor_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the SDK and exactly its declared minimum versions; returns its python."""
    folder = tmp_path_factory.mktemp("sdk-floor")
    # Built from a copy, since setuptools writes build/ and egg-info next to the sources.
    source = folder / "source"
    shutil.copytree(
        SDK,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".mypy_cache"),
    )
    sdk_wheels = folder / "sdk-wheels"
    built = _pip(
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(sdk_wheels),
        str(source),
    )
    assert built.returncode == 0, built.stderr
    environment = folder / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in declared_floors().items()]
    _install_floors(python, pins, sdk_wheels)
    return python


def _floor_env(target: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return {**env, "INTEREST_TREE_TARGET": target}


def test_the_floors_are_the_ones_the_generated_code_needs() -> None:
    """The generated code names the runtimes it needs; the declared floors are no lower."""
    floors = declared_floors()
    generated = SDK / "src" / "interesttree" / "v1"
    for path in generated.glob("*_pb2.py"):
        found = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", path.read_text())
        assert found, path
        gencode = tuple(int(part) for part in found.groups())
        floor = tuple(int(part) for part in floors["protobuf"].split("."))
        assert floor + (0,) * (3 - len(floor)) >= gencode, f"{path.name}: gencode {gencode}"
    for path in generated.glob("*_pb2_grpc.py"):
        found = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", path.read_text())
        assert found, path
        stubs = tuple(int(part) for part in found.group(1).split("."))
        floor = tuple(int(part) for part in floors["grpcio"].split("."))
        assert floor + (0,) * (3 - len(floor)) >= stubs, f"{path.name}: stubs {stubs}"


async def test_the_sdk_works_on_its_declared_minimum_versions(
    floor_venv: Path, data_only_server: RunningServer, tmp_path: Path
) -> None:
    floors = declared_floors()
    target = f"127.0.0.1:{data_only_server.port}"
    readme = (SDK / "README.md").read_text()
    examples = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    scripts = [(f"example_{n}.py", code) for n, code in enumerate(examples)]
    outputs = []
    for name, code in [*scripts, ("async_check.py", ASYNC_CHECK)]:
        script = tmp_path / name
        script.write_text(code)
        process = await asyncio.create_subprocess_exec(
            str(floor_venv),
            "-I",
            str(script),
            cwd=tmp_path,
            env=_floor_env(target),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
        assert process.returncode == 0, stderr.decode()
        outputs.append(stdout.decode())
    example_out, async_out = outputs[0], outputs[-1]
    assert "hidden gone: True" in outputs[1]
    assert "Space opera" in example_out
    assert "recommended: items/" in example_out
    assert "rejected: INVALID_RESOURCE_NAME ['name']" in example_out
    assert "items: 5" in async_out
    assert "not found: ITEM_NOT_FOUND items/no-such-item" in async_out
    # The venv really ran the floors, not newer versions.
    grpc_floor, protobuf_floor = floors["grpcio"], floors["protobuf"]
    versions = async_out.split("versions: ")[1].split()
    assert versions[0].startswith(grpc_floor), versions
    assert versions[1].startswith(protobuf_floor), versions


def test_mypy_strict_passes_on_the_sdk_and_readme_with_the_minimum_versions(
    floor_venv: Path,
) -> None:
    """The installed (not editable) SDK, with the oldest type stubs it declares."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "check-sdk-types"),
            "--python-executable",
            str(floor_venv),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Success: no issues found") == 2, result.stdout
