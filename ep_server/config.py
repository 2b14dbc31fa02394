"""The EP's configuration: a TOML file, with ``EP_*`` environment overrides.

Precedence, highest first: command-line flags, environment variables, the
config file, built-in defaults. Without a config file the packaged
``default.toml`` is used, which answers the IVOA note's docker example.

Environment variables name a key by its path, sections joined by ``__``:
``EP_SERVER__LISTEN=0.0.0.0:50051``, ``EP_PLUGINS__BLOCK=static,docker``,
``EP_PLUGIN__DOCKER__MAX_CORES=4``. Values are read as JSON when they parse as
JSON (numbers, booleans, lists) and as plain strings otherwise; list settings
also accept comma-separated strings.

Validation uses pydantic: it gives every error with its full key path
(``server.listen``) in one report, and rejects unknown keys, so a typo in the
config file fails start-up instead of being silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ep_server.config_problems import describe_problems, origin_of, problem_line
from ep_server.errors import ConfigError
from ep_server.model import MAX_TASKINFO_DEPTH, parse_bytes
from ep_server.settings_types import ByteSize, NameList

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthConfig",
    "HostSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "PluginsSettings",
    "ScheduleSettings",
    "ServerSettings",
    "Settings",
    "TLSSettings",
    "TracingSettings",
    "load_settings",
]

ENV_PREFIX = "EP_"
KiB = 1024
MiB = 1024 * KiB


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in a config file are relative to that file's folder."""
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else base / value


FilePath = Annotated[Path, AfterValidator(_relative_to_config)]


#: Seconds by which ``[schedule] announce_retry_after`` must exceed
#: ``[plugins] deadline``.
ANNOUNCE_MARGIN = 5.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """``[server]``: where and how the gRPC server listens."""

    #: HOST:PORT to listen on; port 0 picks a free port.
    listen: str = "127.0.0.1:50051"
    #: Share the port with other processes (SO_REUSEPORT). Off by default, so
    #: that a second EP on a busy port fails instead of silently taking half
    #: its traffic; ``--workers`` turns it on for its own workers.
    reuse_port: bool = False
    #: Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_period: float = Field(10.0, ge=0)
    #: gRPC's receive limit; larger messages get RESOURCE_EXHAUSTED from gRPC.
    max_receive_message_bytes: ByteSize = 4 * MiB
    #: gRPC's send limit.
    max_send_message_bytes: ByteSize = 4 * MiB
    #: Largest encoded taskinfo accepted; larger gets INVALID_ARGUMENT.
    max_taskinfo_bytes: ByteSize = 256 * KiB
    #: Deepest taskinfo nesting accepted (the top-level object is level 1).
    max_taskinfo_depth: int = Field(MAX_TASKINFO_DEPTH, ge=1, le=MAX_TASKINFO_DEPTH)
    #: Seconds a client connection may live before the server sends GOAWAY
    #: and the client reconnects, so that clients behind a load balancer or
    #: resolving many replicas rebalance when replicas come and go. gRPC adds
    #: +/-10% jitter. 0 = unlimited. The upper bound is gRPC's: it takes
    #: milliseconds in a C int (about 24.8 days).
    max_connection_age: float = Field(0.0, ge=0, le=2_147_483)
    #: Seconds the calls in flight on an aged connection get to finish
    #: before it is closed. 0 = unlimited.
    max_connection_age_grace: float = Field(0.0, ge=0, le=2_147_483)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("expected HOST:PORT, for example 127.0.0.1:50051 or [::1]:0")
        return value

    @model_validator(mode="after")
    def _receive_above_taskinfo(self) -> ServerSettings:
        # gRPC's own limit must sit above the taskinfo limit, or an oversize
        # taskinfo gets a bare RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT
        # naming the field. 64 KiB leaves room for the rest of the request.
        if self.max_receive_message_bytes < self.max_taskinfo_bytes + 64 * KiB:
            raise ValueError(
                "max_receive_message_bytes must exceed max_taskinfo_bytes by at least 64 KiB"
            )
        return self


class PluginsSettings(_Section):
    """``[plugins]``: which plugins load, and how long each may think."""

    #: If set, only these plugins (entry-point names) load.
    allow: NameList | None = None
    #: These plugins never load (they are not even imported).
    block: NameList = []
    #: Extra plugin modules to load by import path (``pkg.module``), beside
    #: the entry points: for trying a plugin before packaging it, and tests.
    modules: NameList = []
    #: Seconds one call of one plugin's hook may take (evaluating one Ask,
    #: checking a slot, hearing of a booking).
    deadline: float = Field(2.0, gt=0, le=300)
    #: Worker threads shared by every plain (not async) hook of every
    #: plugin; one plugin may hold at most half of them at once.
    threads: int = Field(8, ge=1, le=256)


class HostSettings(_Section):
    """``[host]``: override what is detected about the host."""

    cores: int | None = Field(None, ge=1)
    memory: ByteSize | None = None
    architecture: str | None = None
    os: str | None = None


class TLSSettings(_Section):
    """``[tls]``: serve over TLS, and optionally require client certificates."""

    #: PEM certificate chain and private key of the server; both or neither.
    cert: FilePath | None = None
    key: FilePath | None = None
    #: PEM CA bundle that client certificates are verified against (mTLS).
    client_ca: FilePath | None = None
    #: Refuse clients without a certificate signed by ``client_ca``; set
    #: together with ``client_ca`` (gRPC Python cannot make it optional).
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _complete(self) -> TLSSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        if (self.client_ca or self.require_client_cert) and self.cert is None:
            raise ValueError("client certificates need TLS: set cert and key")
        if self.require_client_cert != (self.client_ca is not None):
            # gRPC Python cannot ask for an optional client certificate: with
            # require_client_auth off it asks for none, so a client_ca alone
            # would silently identify nobody.
            raise ValueError("client_ca and require_client_cert = true go together (mTLS)")
        return self

    @property
    def enabled(self) -> bool:
        """True when the server serves TLS."""
        return self.cert is not None


#: The RPCs that may be anonymous (``[auth].anonymous``); booking RPCs never are.
RPC_NAMES = ("Ask", "GetServiceInfo")


def _default_ledger() -> str:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "ep-server" / "ledger.sqlite3")


def _pool_amount(value: Any) -> Any:
    return (
        value if value == "host" else parse_bytes(value) if isinstance(value, int | str) else value
    )


PoolAmount = Annotated[int | Literal["host"], BeforeValidator(_pool_amount)]


class ScheduleSettings(_Section):
    """``[schedule]``: time-slot offers and bookings ("when can I run this?")."""

    #: Off: an Ask with a schedule is a NO (SCHEDULING_UNSUPPORTED).
    enabled: bool = True
    #: The booking ledger: a SQLite file (":memory:" for a throwaway one),
    #: for one EP process; or a PostgreSQL connection URI
    #: (``postgresql://user@host:5432/db``, libpq syntax; the password from
    #: the URI, ``PGPASSWORD`` or a passfile), shared by any number of replicas.
    ledger: str = Field(default_factory=_default_ledger)
    #: SQLite only: PRAGMA synchronous: FULL survives power loss, NORMAL a
    #: process crash.
    synchronous: str = Field("FULL", pattern="^(FULL|NORMAL)$")
    #: PostgreSQL only: connections each EP process keeps to the ledger (its
    #: ledger calls run on as many threads).
    ledger_connections: int = Field(4, ge=1, le=64)
    #: The pools bookings draw on: "host" = this host's cores or memory;
    #: other pools (e.g. gpus = 4) as plain numbers; sizes accept "64GiB".
    pools: dict[str, PoolAmount] = {"cores": "host", "memory": "host"}
    #: Seconds an offer holds its slot unless accepted.
    offer_ttl: float = Field(300.0, gt=0, le=86400)
    #: At most this many offers per Ask, earliest first.
    max_offers: int = Field(3, ge=1, le=20)
    #: At most this many outstanding offers per caller.
    max_outstanding_offers: int = Field(10, ge=1, le=1000)
    #: How far ahead slots are searched, in days.
    horizon_days: int = Field(366, ge=1, le=3660)
    #: Seconds after a booking or cancellation when, if the process that made
    #: it has not recorded that its plugin heard of it (it died first, or the
    #: plugin stayed busy), any process announces it. Keep it above the
    #: plugin deadline by at least ANNOUNCE_MARGIN (checked), or a plugin
    #: may hear twice.
    announce_retry_after: float = Field(90.0, ge=1.0, le=86400.0)

    @field_validator("ledger")
    @classmethod
    def _ledger_path(cls, value: str, info: ValidationInfo) -> str:
        if value == ":memory:" or is_postgres_uri(value):
            return value
        if "://" in value:
            raise ValueError("expected a SQLite file path or a postgresql:// URI")
        if _CONNINFO.match(value):
            raise ValueError(
                "looks like a libpq key=value connection string; write it as a "
                "postgresql:// URI (postgresql://user@host:5432/dbname?options=...)"
            )
        return str(_relative_to_config(Path(value).expanduser(), info))

    @property
    def postgres(self) -> bool:
        """True when the ledger is a PostgreSQL database."""
        return is_postgres_uri(self.ledger)


#: A libpq key=value connection string (``host=db dbname=ep``), which would
#: otherwise be taken for the name of a SQLite file.
_CONNINFO = re.compile(r"^\s*[a-z_]+\s*=\s*\S+(\s+[a-z_]+\s*=|\s*$)")


def is_postgres_uri(value: str) -> bool:
    """Whether a ``[schedule] ledger`` value names a PostgreSQL database."""
    return value.startswith(("postgresql://", "postgres://"))


#: The JWS algorithms that ``[auth].jwt_algorithms`` may name, and that a JWKS
#: key may have: signatures with a public key only. ``none`` and the HMAC
#: family are never accepted, so a public key can never be used as an HMAC
#: secret (algorithm confusion). Defined here, beside the section it checks,
#: so that reading the config does not import the JWT library.
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES256K",
        "ES384",
        "ES512",
        "ES521",
        "EdDSA",
    }
)


class AuthConfig(_Section):
    """``[auth]``: who callers are (see :mod:`ep_server.auth`).

    What the :class:`~ep_server.auth.Authenticator` is built from. The files
    it names are read by the authenticator, which reports their problems.
    """

    #: TOML file of static bearer tokens (their SHA-256), for small sites;
    #: its format is in :mod:`ep_server.auth.tokens`.
    tokens_file: FilePath | None = None
    #: JWTs (see :mod:`ep_server.auth.jwts`): the required issuer, and the
    #: JWKS file with its public keys; the two go together.
    jwt_issuer: str | None = None
    jwks_file: FilePath | None = None
    #: When set, a JWT's ``aud`` must contain it.
    jwt_audience: str | None = None
    #: The JWS algorithms accepted, from :data:`ASYMMETRIC_ALGORITHMS`.
    jwt_algorithms: NameList = ["RS256", "ES256", "EdDSA"]
    #: Seconds of clock skew allowed for ``exp``, ``nbf`` and ``iat``.
    jwt_leeway: float = Field(30.0, ge=0, allow_inf_nan=False)
    #: JWT claim holding the caller's groups (a list of strings).
    groups_claim: str = Field("groups", min_length=1)
    #: RPCs that may be called without credentials; the others need them.
    anonymous: NameList = list(RPC_NAMES)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must not be empty")
        refused = sorted(set(value) - ASYMMETRIC_ALGORITHMS)
        if refused:
            raise ValueError(
                f"{refused} are not accepted; choose from {sorted(ASYMMETRIC_ALGORITHMS)}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AuthConfig:
        if (self.jwt_issuer is None) != (self.jwks_file is None):
            raise ValueError("jwt_issuer and jwks_file must be given together")
        unknown = sorted(set(self.anonymous) - set(RPC_NAMES))
        if unknown:
            raise ValueError(f"anonymous: unknown RPCs {unknown}; known: {list(RPC_NAMES)}")
        return self


class LimitsSettings(_Section):
    """``[limits]``: what one caller, and all callers, may ask of the server."""

    #: RPCs handled at once; more get RESOURCE_EXHAUSTED (TOO_MANY_REQUESTS). 0 = no limit.
    max_concurrent_rpcs: int = Field(1000, ge=0)
    #: Asks per second per identity (anonymous callers: per client address),
    #: as a token bucket of ``ask_burst``; more get RESOURCE_EXHAUSTED. 0 = off.
    ask_rate: float = Field(0.0, ge=0)
    ask_burst: int = Field(20, ge=1)
    #: Failed authentications per second per client address, as a token
    #: bucket of ``auth_failure_burst``. Past it, calls from that address that
    #: carry credentials get RESOURCE_EXHAUSTED (AUTH_FAILURES) without being
    #: checked, until the bucket refills: token guessing is slowed to this
    #: rate. Behind a proxy (a mesh sidecar) all callers share its address.
    #: 0 = off.
    auth_failure_rate: float = Field(5.0, ge=0)
    auth_failure_burst: int = Field(50, ge=1)
    #: HTTP/2 keepalive: ping an idle client every ``keepalive_time`` seconds
    #: and drop it after ``keepalive_timeout`` without an answer; clients may
    #: ping at most every ``min_ping_interval`` seconds.
    keepalive_time: float = Field(7200.0, gt=0)
    keepalive_timeout: float = Field(20.0, gt=0)
    min_ping_interval: float = Field(60.0, ge=0)


class MetricsSettings(_Section):
    """``[metrics]``: Prometheus metrics on a separate HTTP port."""

    #: HOST:PORT for ``/metrics``; unset = no metrics endpoint.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return None if value is None else ServerSettings._host_port(value)


class HttpSettings(_Section):
    """``[http]``: the HTTP door beside gRPC (REST/JSON from the proto's
    ``google.api.http`` rules, the IVOA note's ``/accepts`` and ``/accept``,
    ``/openapi.json`` and the operator page), served by the same process on
    the same event loop, with the same TLS (``[tls]``), credentials and
    limits."""

    enabled: bool = True
    #: HOST:PORT to listen on; port 0 picks a free port.
    listen: str = "127.0.0.1:8080"
    #: Largest request body accepted; larger gets 413.
    max_body_bytes: ByteSize = 4 * MiB
    #: Origins whose pages may call the API from a browser (CORS), such as
    #: "https://portal.example.org", or "*" for any; empty (the default)
    #: sends no CORS headers, so browsers keep other sites' pages out.
    cors_origins: list[str] = []

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return ServerSettings._host_port(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: expected scheme://host[:port], "
                    "such as https://portal.example.org, or *"
                )
        return value


class LoggingSettings(_Section):
    """``[logging]``."""

    #: "text" for people, "json" (one object a line) for log pipelines.
    format: str = Field("text", pattern="^(text|json)$")
    #: One INFO line per RPC (method, code, duration, identity, request id).
    access_log: bool = False


class TracingSettings(_Section):
    """``[tracing]``: OpenTelemetry spans for each RPC (needs the
    ``ep-server[tracing]`` extra and an OpenTelemetry SDK set up by the
    environment, e.g. the ``OTEL_*`` variables with ``opentelemetry-instrument``)."""

    enabled: bool = False


class Settings(_Section):
    """The whole configuration."""

    server: ServerSettings = ServerSettings()
    tls: TLSSettings = TLSSettings()
    auth: AuthConfig = AuthConfig()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    tracing: TracingSettings = TracingSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    plugins: PluginsSettings = PluginsSettings()
    host: HostSettings = HostSettings()
    #: ``[plugin.<name>]``: each plugin's own section, validated by the plugin.
    plugin: dict[str, dict[str, Any]] = {}
    #: Where the settings came from, for the start-up log.
    source: str = Field("defaults", exclude=True)
    #: Keys (dotted) set by an environment variable or a flag, and its name.
    origins: dict[str, str] = Field(default_factory=dict, exclude=True)

    def problems(self, exc: ValidationError, prefix: str = "") -> list[str]:
        """``exc``'s errors in plain words, each naming its file or variable
        (see :func:`~ep_server.config_problems.describe_problems`)."""
        return describe_problems(exc, prefix=prefix, origins=self.origins, source=self.source)


def default_config_text() -> str:
    """The packaged default configuration (``ep_server/default.toml``)."""
    return (resources.files("ep_server") / "default.toml").read_text(encoding="utf-8")


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the config file (or the packaged default), apply environment
    variables and then ``overrides`` (``{"server.listen": ...}``), validate.

    :raises ConfigError: naming every bad key.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("EP_CONFIG") or None
    if path is None:
        source, text = "built-in default config", default_config_text()
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    origins: dict[str, str] = {}
    for name, env_path, value in _env_items(environ):
        _set_path(data, env_path, value)
        origins[".".join(env_path)] = f"${name}"
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted.split("."), value)
        origins[dotted] = "the command line"
    base = None if path is None else Path(path).resolve().parent
    context = {"base": base}
    # Checked on the raw values, so that it is reported with the other keys'
    # problems (pydantic skips a model's own validators when a field fails).
    across = _announce_problem(data, origins, source)
    try:
        settings = Settings.model_validate(
            {**data, "source": source, "origins": origins}, context=context
        )
    except ValidationError as exc:
        problems = describe_problems(exc, origins=origins, source=source, model=Settings)
        error = ConfigError("invalid configuration:\n" + "\n".join([*problems, *across]))
        error.partial = _plugins_only(data, source, origins, context)
        raise error from exc
    if across:
        error = ConfigError("invalid configuration:\n" + "\n".join(across))
        error.partial = _plugins_only(data, source, origins, context)
        raise error
    return settings


def _announce_problem(
    data: Mapping[str, Any], origins: Mapping[str, str], source: str
) -> list[str]:
    """``schedule.announce_retry_after`` must exceed ``plugins.deadline`` by
    ANNOUNCE_MARGIN: an announcement may take the deadline, and one retried
    sooner reaches its plugin twice. Values of the wrong type are left to
    their own fields' checks."""

    def number(section: str, key: str, model: type[BaseModel]) -> float | None:
        table = data.get(section)
        value = table.get(key) if isinstance(table, Mapping) else None
        value = model.model_fields[key].default if value is None else value
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    retry = number("schedule", "announce_retry_after", ScheduleSettings)
    deadline = number("plugins", "deadline", PluginsSettings)
    if retry is None or deadline is None or retry >= deadline + ANNOUNCE_MARGIN:
        return []
    deadline_from = origin_of("plugins.deadline", origins, source)
    why = (
        f"{retry:g}s must exceed plugins.deadline ({deadline:g}s, from {deadline_from})"
        f" by at least {ANNOUNCE_MARGIN:g}s: an announcement may take the deadline, and"
        " one retried sooner reaches its plugin twice"
    )
    return [problem_line("schedule.announce_retry_after", why, origins, source)]


def _plugins_only(
    data: dict[str, Any], source: str, origins: dict[str, str], context: dict[str, Any]
) -> Settings | None:
    """Settings with only the plugin sections (and which plugins load) of
    ``data``, when those are valid: so that plugins' keys can be checked
    while the core's are wrong, and every problem reported at once."""
    for keep in (("plugin", "plugins"), ("plugin",)):
        subset = {k: data[k] for k in keep if k in data}
        try:
            return Settings.model_validate(
                {**subset, "source": source, "origins": origins}, context=context
            )
        except ValidationError:
            continue
    return None


def _env_items(environ: Mapping[str, str]) -> list[tuple[str, list[str], Any]]:
    items = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        items.append((name, path, value))
    return items


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a table")
        node = child
    node[path[-1]] = value


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Every error pydantic found, one line each, as ``  <prefix><key>: <why>``
    in plain words (the EP's own settings, and plugins' sections with
    ``plugin.<name>.``)."""
    return "\n".join(describe_problems(exc, prefix=prefix))
