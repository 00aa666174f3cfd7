"""The TOML config file (`interest-tree serve --config FILE`), read by pydantic-settings.

Every setting of `server.config.Settings` may be set there, by its field name (`port = 50051`,
`grace_period_s = 10.0`, `llm_api_key = "…"`). Precedence, highest first: command-line flags,
environment variables (`INTEREST_TREE_<NAME>`), the file, the defaults. An unknown key or a
value out of range is an error naming it, so a typo never passes silently.

`interest-tree config-template` prints a file that lists every setting with its default and
what it does (from the field's docstring); settings whose default is unset are commented out.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from server.config import Settings


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `overrides` (the flags), the environment, then `config_file`."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            toml = TomlConfigSettingsSource(settings_cls)
            return init_settings, env_settings, dotenv_settings, toml, file_secret_settings

    return FileSettings(**overrides)


def _toml_value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(part) for part in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a TOML basic string.
    return json.dumps(str(value), ensure_ascii=False)


def config_template() -> str:
    """A TOML file listing every setting with its default and its description."""
    lines = [
        "# interest-tree settings: `interest-tree serve --config THIS_FILE`.",
        "# Flags override this file, and INTEREST_TREE_<NAME> environment variables do too.",
        "# Commented-out settings are unset by default.",
    ]
    for name, field in Settings.model_fields.items():
        lines.append("")
        for line in (field.description or "").splitlines():
            lines.append(f"# {line.strip()}".rstrip())
        lines.append(f"# environment: INTEREST_TREE_{name.upper()}")
        default = field.get_default(call_default_factory=True)
        if default is None:
            lines.append(f"# {name} =")
        else:
            lines.append(f"{name} = {_toml_value(default)}")
    return "\n".join(lines) + "\n"
