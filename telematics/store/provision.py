"""Make a TimescaleDB available for the project: an external server, or a private local cluster."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
PG_CONFIG = PG_BIN / "pg_config"
SOURCE_SUITE = "trixie"
SOURCE_PACKAGE = "timescaledb"
DEFAULT_PORT = 5444
DATABASE_NAME = "ubi"
# The role pricing and the underwriter side connect as (migrations 0003 and 0008 create it
# and grant it the aggregates only: no raw samples, credentials or privacy-zone keys).
PRICING_ROLE = "ubi_pricing"


class ProvisionError(RuntimeError):
    """A provisioning step failed; the message names the step and what the user can do instead."""


@dataclass(frozen=True)
class LocalCluster:
    """Where the project's private PostgreSQL cluster lives."""

    state_dir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "postgres.log"

    def url(self, dbname: str = DATABASE_NAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


def default_state_dir() -> Path:
    """The project's state folder: `UBI_STATE_DIR`, else `.ubi/` at the repository root."""
    env = os.environ.get("UBI_STATE_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / ".ubi"


def _postgres_can_enter(path: Path) -> bool:
    """Whether the `postgres` OS user can reach `path` (a root-only parent would stop it)."""
    if os.geteuid() != 0:
        return True
    probe = path if path.exists() else path.parent
    return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)],
                          capture_output=True, check=False).returncode == 0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def local_cluster() -> LocalCluster:
    """The private cluster of this checkout. Its port is chosen once (the first free one from
    5444, or `UBI_DB_PORT`) and remembered, so two checkouts on one machine never collide."""
    state_dir = default_state_dir()
    if not _postgres_can_enter(state_dir.parent):
        digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
        state_dir = Path("/var/lib/postgresql") / f"ubi-{digest}"
    if os.environ.get("UBI_DB_PORT"):
        return LocalCluster(state_dir, int(os.environ["UBI_DB_PORT"]))
    port_file = state_dir / "port"
    if port_file.exists():
        return LocalCluster(state_dir, int(port_file.read_text().strip()))
    port = next(p for p in range(DEFAULT_PORT, DEFAULT_PORT + 200) if _port_free(p))
    return LocalCluster(state_dir, port)


def database_url() -> str:
    """The URL every component uses: `UBI_DATABASE_URL` or the local cluster's."""
    return os.environ.get("UBI_DATABASE_URL") or local_cluster().url()


def as_pricing_role(url: str) -> str:
    """The same server and database as `url`, as the role `PRICING_ROLE`.

    Another user's password is dropped rather than sent for the pricing role: with password
    authentication its own comes from ~/.pgpass or PGPASSWORD, or the whole connection
    from `UBI_PRICING_DATABASE_URL`.
    """
    params = psycopg.conninfo.conninfo_to_dict(url)
    if params.get("user") != PRICING_ROLE:
        params.pop("password", None)
    params["user"] = PRICING_ROLE
    return psycopg.conninfo.make_conninfo("", **params)


def pricing_database_url(url: str | None = None) -> str:
    """The connection of the pricing side (rating, the workbench, the underwriter API):
    `UBI_PRICING_DATABASE_URL`, else `url` (default `database_url()`) as the role
    `PRICING_ROLE`."""
    return (os.environ.get("UBI_PRICING_DATABASE_URL")
            or as_pricing_role(url if url is not None else database_url()))


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _run(step: str, cmd: list[str], *, cwd: Path | None = None, user: str | None = None,
         env: dict[str, str] | None = None, quiet: bool = True) -> str:
    if user is not None and os.geteuid() == 0 and user != "root":
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        tail = ((proc.stderr or "") + (proc.stdout or ""))[-2000:] if quiet else ""
        raise ProvisionError(
            f"step '{step}' failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n"
            "You can instead point the project at an existing TimescaleDB server by setting "
            "UBI_DATABASE_URL=postgresql://user@host:port/dbname."
        )
    return proc.stdout or ""


def extension_installed() -> bool:
    """Whether the machine's PostgreSQL has the timescaledb extension files."""
    if not PG_CONFIG.exists():
        return False
    sharedir = subprocess.run([str(PG_CONFIG), "--sharedir"], capture_output=True, text=True,
                              check=False).stdout.strip()
    return Path(sharedir, "extension", "timescaledb.control").exists()


def system_mirror_uri() -> str:
    """The Debian mirror URI that the system's own apt sources already name."""
    candidates: list[str] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        text = Path(path).read_text()
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, flags=re.M))
            suites = fields.get("Suites", "")
            if "URIs" in fields and "security" not in suites:
                candidates.extend(fields["URIs"].split())
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("deb", "deb-src"):
                uri = next(p for p in parts[1:] if not p.startswith("["))
                if "security" not in line:
                    candidates.append(uri)
    debian = [u for u in candidates if u.rstrip("/").endswith("/debian")]
    if not (debian or candidates):
        raise ProvisionError(
            "step 'find mirror' failed: no Debian mirror URI in /etc/apt/sources.list or "
            "/etc/apt/sources.list.d/. Set UBI_DATABASE_URL to an existing TimescaleDB server."
        )
    return (debian or candidates)[0]


def build_extension(scratch: Path) -> None:
    """Build and install TimescaleDB (Apache-2 edition) from Debian's trixie source package."""
    if os.geteuid() != 0:
        raise ProvisionError(
            "step 'build timescaledb' needs root (apt-get install and make install into "
            f"PostgreSQL {PG_MAJOR}). Run as root, or set UBI_DATABASE_URL to a server that has "
            "the timescaledb extension."
        )
    scratch.mkdir(parents=True, exist_ok=True)
    apt_dir = scratch / "apt"
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list.d").mkdir(exist_ok=True)
    mirror = system_mirror_uri()
    (apt_dir / "sources.list").write_text(
        f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} "
        f"{SOURCE_SUITE} main\n"
    )
    private = [
        "-o", f"Dir::Etc::sourcelist={apt_dir / 'sources.list'}",
        "-o", f"Dir::Etc::sourceparts={apt_dir / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
    ]
    say(f"reading the {SOURCE_SUITE} source index through a private apt configuration")
    _run("apt-get update (private source list)", ["apt-get", *private, "update"])
    src_dir = scratch / "src"
    src_dir.mkdir(exist_ok=True)
    say(f"downloading the Debian source package '{SOURCE_PACKAGE}'")
    _run("apt-get source", ["apt-get", *private, "source", "--download-only", SOURCE_PACKAGE],
         cwd=src_dir)
    origs = sorted(src_dir.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if not origs:
        raise ProvisionError(f"step 'apt-get source' left no .orig tarball in {src_dir}")
    tree = src_dir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    with tarfile.open(origs[-1]) as archive:
        archive.extractall(tree, filter="data")
    roots = [p for p in tree.iterdir() if p.is_dir()]
    root = roots[0] if len(roots) == 1 else tree
    say(f"unpacked {origs[-1].name}")
    say(f"installing build dependencies (postgresql-server-dev-{PG_MAJOR}, cmake)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get update (system)", ["apt-get", "update"], env=env)
    _run("apt-get install build dependencies",
         ["apt-get", "install", "-y", "--no-install-recommends",
          f"postgresql-server-dev-{PG_MAJOR}", "cmake", "make", "gcc", "libssl-dev"], env=env)
    say("configuring TimescaleDB (Apache-2 edition only)")
    shutil.rmtree(root / "build", ignore_errors=True)
    _run("bootstrap", ["./bootstrap", "-DAPACHE_ONLY=1", "-DREGRESS_CHECKS=OFF",
                       "-DTAP_CHECKS=OFF", "-DWARNINGS_AS_ERRORS=OFF",
                       f"-DPG_CONFIG={PG_CONFIG}"], cwd=root)
    say("compiling and installing TimescaleDB")
    started = time.monotonic()
    _run("make install", ["make", f"-j{os.cpu_count() or 2}", "install"], cwd=root / "build")
    say(f"TimescaleDB built and installed in {time.monotonic() - started:.0f} s")


def _owner() -> str:
    """PostgreSQL refuses to run as root: a root caller runs the cluster as `postgres`."""
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def _pg_ctl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(PG_BIN / "pg_ctl"), "-D", str(cluster.data_dir), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def cluster_running(cluster: LocalCluster) -> bool:
    return cluster.data_dir.exists() and _pg_ctl(cluster, "status").returncode == 0


def start_cluster(cluster: LocalCluster) -> None:
    owner = _owner()
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    if not (cluster.data_dir / "PG_VERSION").exists():
        say(f"initialising a private PostgreSQL {PG_MAJOR} cluster in {cluster.data_dir}")
        cluster.data_dir.mkdir(parents=True, exist_ok=True)
        cluster.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(cluster.data_dir, owner, owner)
            shutil.chown(cluster.socket_dir, owner, owner)
            os.chmod(cluster.state_dir, 0o755)
        _run("initdb", [str(PG_BIN / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres",
                        "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"], user=owner)
        (cluster.state_dir / "port").write_text(f"{cluster.port}\n")
        conf = cluster.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# written by `ubi db up`\n"
                "shared_preload_libraries = 'timescaledb'\n"
                f"port = {cluster.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{cluster.socket_dir}'\n"
                "timezone = 'UTC'\n"
                "timescaledb.telemetry_level = off\n"
                "max_connections = 200\n"
                "shared_buffers = 512MB\n"
                "max_wal_size = 4GB\n"
                "synchronous_commit = on\n"
            )
    if cluster_running(cluster):
        say(f"private cluster already running on port {cluster.port}")
        return
    cluster.socket_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(cluster.socket_dir, owner, owner)
        if cluster.log_file.exists():
            shutil.chown(cluster.log_file, owner, owner)
        else:
            cluster.log_file.touch()
            shutil.chown(cluster.log_file, owner, owner)
    say(f"starting the private cluster on 127.0.0.1:{cluster.port}")
    _run("pg_ctl start", [str(PG_BIN / "pg_ctl"), "-D", str(cluster.data_dir), "-l",
                          str(cluster.log_file), "-w", "-t", "60", "start"], user=owner)


def stop_cluster(cluster: LocalCluster) -> bool:
    if not cluster_running(cluster):
        return False
    proc = _pg_ctl(cluster, "-m", "fast", "-w", "stop")
    if proc.returncode != 0:
        raise ProvisionError(f"step 'pg_ctl stop' failed: {proc.stderr.strip()}")
    return True


def ensure_database(cluster: LocalCluster, dbname: str = DATABASE_NAME) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            say(f"creating database '{dbname}'")
            conn.execute(f'CREATE DATABASE "{dbname}"')


def check_timescaledb(url: str) -> str:
    """Return the available timescaledb version on the server at `url`, or raise with a fix."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    except psycopg.OperationalError as exc:
        raise ProvisionError(f"cannot connect to {redact(url)}: {exc}".strip()) from exc
    if row is None:
        raise ProvisionError(
            f"the server at {redact(url)} has no timescaledb extension. Install TimescaleDB "
            "on that server (package or source build) and add 'timescaledb' to "
            "shared_preload_libraries, or unset UBI_DATABASE_URL to let `ubi db up` provide "
            "a local one."
        )
    if preload is None or "timescaledb" not in str(preload[0]):
        raise ProvisionError(
            f"the server at {redact(url)} has timescaledb installed but not preloaded: add "
            "shared_preload_libraries = 'timescaledb' to its postgresql.conf and restart it."
        )
    return str(row[0])


def redact(url: str) -> str:
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


def up() -> str:
    """Make a migrated TimescaleDB available and return its URL. Idempotent."""
    from telematics.store.migrate import migrate

    external = os.environ.get("UBI_DATABASE_URL")
    if external:
        say(f"using the server named by UBI_DATABASE_URL ({redact(external)})")
        version = check_timescaledb(external)
        url = external
    else:
        cluster = local_cluster()
        if extension_installed():
            say(f"timescaledb extension already installed for PostgreSQL {PG_MAJOR}")
        else:
            say(f"timescaledb is not installed for PostgreSQL {PG_MAJOR}: building it from "
                f"Debian's {SOURCE_SUITE} source package")
            build_extension(cluster.state_dir / "build")
        start_cluster(cluster)
        ensure_database(cluster)
        url = cluster.url()
        version = check_timescaledb(url)
    applied = migrate(url)
    say(f"timescaledb {version} ready; migrations applied now: {applied or 'none (up to date)'}")
    say(f"database URL: {redact(url)}")
    return url


def status() -> dict[str, str]:
    """Server version, extension version, port and data folder of the project's database."""
    url = database_url()
    info: dict[str, str] = {"url": redact(url)}
    if not os.environ.get("UBI_DATABASE_URL"):
        cluster = local_cluster()
        info["data_dir"] = str(cluster.data_dir)
        info["port"] = str(cluster.port)
        info["running"] = "yes" if cluster_running(cluster) else "no"
        if info["running"] == "no":
            return info
    with psycopg.connect(url, connect_timeout=5) as conn:
        info["server_version"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        info["port"] = str(conn.execute("SHOW port").fetchone()[0])  # type: ignore[index]
        info["data_dir"] = info.get("data_dir", "(remote)")
        ext = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        info["timescaledb"] = str(ext[0]) if ext else "not created"
    return info
