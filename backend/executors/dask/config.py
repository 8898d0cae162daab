"""agent.yaml `dask:`, the settings of `executor: dask`. Importable without `distributed`
installed: the extra is only needed once the executor starts."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...runtimes.section import ENV_NAME_RE

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a resource (box) name; always fullmatch


def is_loopback_host(host: str) -> bool:
    from ...web.security import is_loopback  # the one definition of loopback

    return is_loopback(host)


class DaskTLS(BaseModel):
    """Files for Dask's mutual TLS (distributed.security.Security): this host's certificate and
    key, and the CA that signed the scheduler's and the workers' certificates."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ca_file: str = Field(min_length=1)
    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)


class DaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # tcp://127.0.0.1:8786 on the project host; tls://host:port anywhere else.
    scheduler: str = Field(min_length=1)
    # What each run holds on its worker: a worker started with --resources "runner=2" takes two
    # runs at once. A task's run_on adds its box's own resource (pinning).
    resources: dict[str, float] = Field(default_factory=lambda: {"runner": 1.0})
    tls: DaskTLS | None = None
    # Variables whose values on the project host go to the agent's environment on the worker
    # (e.g. ANTHROPIC_API_KEY). Passed in the run's payload, never on a command line or in a log.
    forward_env: list[str] = Field(default_factory=list)
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    # A run whose worker was lost goes back to pending as a new attempt, up to this many
    # attempts in a row; then the task fails with worker_lost.
    max_attempts: int = Field(default=3, gt=0, le=20)

    @field_validator("connect_timeout", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for name, amount in value.items():
                if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                    raise ValueError(f"{name!r} is not a resource name (letters, digits, '_', '.', '-')")
                if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                    raise ValueError(f"{name}: must be a positive number (got {amount!r})")
                out[name] = float(amount)
            if not out:
                raise ValueError("must name at least one resource (e.g. runner: 1), or every worker takes "
                                 "unlimited runs at once")
            return out
        return value

    @field_validator("forward_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not the name of an environment variable")
        return value

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{value!r} must be tcp://HOST:PORT or tls://HOST:PORT")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise ValueError(f"{value!r} must name the scheduler's port (e.g. tcp://127.0.0.1:8786)")
        return value

    @model_validator(mode="after")
    def _tls_off_loopback(self) -> DaskConfig:
        parts = urlsplit(self.scheduler)
        if parts.scheme == "tls" and self.tls is None:
            raise ValueError("tls: the scheduler is tls://, so dask.tls must name ca_file, cert_file and key_file")
        if parts.scheme == "tcp" and not is_loopback_host(parts.hostname or ""):
            # Dask has no tokens: off loopback, only TLS keeps others from running code on the workers.
            raise ValueError(f"scheduler: {self.scheduler} is plain tcp:// off loopback; use tls://{parts.netloc} "
                             "with dask.tls (Dask itself has no authentication)")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.scheduler).hostname or ""


def valid_box_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))
