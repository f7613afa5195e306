"""Settings read from the environment and validated once, at start-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///sars.db"
# Cursors signed with this are forgeable by anyone who read the repository.
DEVELOPMENT_CURSOR_SECRET = "change-me-outside-development"
# Everything between "//" and the last "@" of a URL that does not parse: it may hold a password.
_USERINFO = re.compile(r"(?<=//).*@", re.DOTALL)

# Plain schemes people paste from elsewhere, mapped to the async driver this service uses.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class ConfigError(Exception):
    """A setting has a bad value; the message is one line naming the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service; each field is read from the variable of the same name."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    # Secrets stay out of the settings' repr (and so out of any traceback or log that shows it).
    DATABASE_URL: str = Field(default=DEFAULT_DATABASE_URL, repr=False)
    API_TOKENS: Annotated[tuple[str, ...], NoDecode, Field(repr=False)] = ()
    DB_POOL_SIZE: int = Field(default=10, ge=1, le=1000)
    DB_MAX_OVERFLOW: int = Field(default=10, ge=0, le=1000)
    DB_POOL_TIMEOUT: float = Field(default=5.0, gt=0, le=600)
    DB_POOL_PRE_PING: bool = False
    DB_ECHO: bool = False
    DB_STATEMENT_CACHE_SIZE: int = Field(default=100, ge=0)
    DB_TRANSACTION_POOLER: bool = False
    DB_STATEMENT_TIMEOUT: float = Field(default=10.0, ge=0, le=86_400)
    DB_LOCK_TIMEOUT: float = Field(default=5.0, ge=0, le=86_400)
    DB_COMMAND_TIMEOUT: float = Field(default=15.0, ge=0, le=86_400)
    DB_WRITE_ATTEMPTS: int = Field(default=3, ge=1, le=20)
    CORS_ORIGINS: Annotated[tuple[str, ...], NoDecode] = ()
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"
    SLOW_QUERY_MS: float = Field(default=500, ge=0)
    MAX_BODY_BYTES: int = Field(default=1024 * 1024, ge=1)
    BULK_MAX_BODY_BYTES: int = Field(default=16 * 1024 * 1024, ge=1)
    CURSOR_SECRET: str = Field(default=DEVELOPMENT_CURSOR_SECRET, min_length=8, repr=False)
    BACKGROUND_JOB_INTERVAL: float = Field(default=0, ge=0)
    # Read replicas (README, "Read replicas"): none by default.
    DATABASE_REPLICA_URLS: Annotated[tuple[str, ...], NoDecode, Field(repr=False)] = ()
    REPLICA_MAX_LAG_BYTES: int = Field(default=16 * 1024 * 1024, ge=0)
    REPLICA_MAX_LAG_SECONDS: float = Field(default=10.0, gt=0, le=86_400)
    REPLICA_CHECK_INTERVAL: float = Field(default=1.0, gt=0, le=3_600)
    READ_TOKEN_TTL: float = Field(default=300.0, gt=0, le=86_400 * 7)

    @field_validator("API_TOKENS", "CORS_ORIGINS", "DATABASE_REPLICA_URLS", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("DB_COMMAND_TIMEOUT")
    @classmethod
    def _above_the_statement_timeout(cls, value: float, info: ValidationInfo) -> float:
        # The server's own timeout should end a slow statement first: the connection then
        # serves on, where the driver's deadline costs a cancel request or the connection.
        statement = info.data.get("DB_STATEMENT_TIMEOUT") or 0
        if value and statement and value <= statement:
            raise ValueError(f"must be above DB_STATEMENT_TIMEOUT ({statement:g}), or 0")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value).render_as_string(hide_password=False)

    @field_validator("DATABASE_REPLICA_URLS")
    @classmethod
    def _postgresql_replicas(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        primary = info.data.get("DATABASE_URL")
        if value and primary is not None and make_url(primary).get_backend_name() != "postgresql":
            raise ValueError("read replicas need a PostgreSQL DATABASE_URL")
        return tuple(_postgresql_url(raw) for raw in value)

    @property
    def database_url(self) -> URL:
        return make_url(self.DATABASE_URL)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_backend_name() == "sqlite"

    @property
    def replica_urls(self) -> tuple[URL, ...]:
        return tuple(make_url(raw) for raw in self.DATABASE_REPLICA_URLS)

    @property
    def signs_with_development_secret(self) -> bool:
        return self.CURSOR_SECRET == DEVELOPMENT_CURSOR_SECRET


def masked_url(raw: str) -> str:
    """``raw`` fit for an error message or a log line: its password, if any, as ``***``."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return _USERINFO.sub("***@", raw)
    if "@" in (url.host or ""):  # an "@" in the password: part of it was read as the host
        return _USERINFO.sub("***@", raw)
    return url.render_as_string(hide_password=True)


def async_database_url(raw: str) -> URL:
    """Parse a database URL and point it at this service's async driver, or explain why not."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(f"not a database URL: {masked_url(raw)!r}") from None
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported driver {url.drivername!r}; use postgresql+asyncpg://... "
            "or sqlite+aiosqlite:///FILE (synchronous drivers cannot serve this async app)"
        )
    return url.set(drivername=driver)


def _postgresql_url(raw: str) -> str:
    """A replica's URL for the async driver; anything but PostgreSQL is refused."""
    try:
        backend: str | None = make_url(raw).get_backend_name()
    except (ArgumentError, ValueError):
        backend = None
    if backend not in ("postgres", "postgresql"):
        raise ValueError(
            f"not a PostgreSQL URL: {masked_url(raw)!r}; replicas are PostgreSQL hot standbys "
            "(postgresql+asyncpg://user:password@host:port/database)"
        )
    return async_database_url(raw).render_as_string(hide_password=False)


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read settings from the environment (overrides win), raising ConfigError on a bad value."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigError(f"invalid {name}: {first['msg']}") from None


def settings_or_exit(overrides: Mapping[str, Any] | None = None) -> Settings:
    """``load_settings`` for an entry point: a bad value ends the process with one line and
    a non-zero status, not a traceback."""
    try:
        return load_settings(overrides)
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
