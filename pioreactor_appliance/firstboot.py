"""First boot of a flashed SD card: the Pi becomes the role its boot partition names.

Run once as root by pioreactor-firstboot.service, before networking::

    python -m pioreactor_appliance.firstboot --boot /boot/firmware --root /

It reads ``pioreactor.ini`` (role, hostname, leader, Wi-Fi) and ``authorized_keys``
from the boot partition and writes, under ``--root``: /etc/pioreactor/appliance.env
(and the /etc/pioreactor/leader marker), the hostname, the data directory's
config.ini, the role's avahi services and clock (chrony), the Wi-Fi profile and lab's SSH keys. On the
running system (``--root /``) it also sets the hostname, makes SSH host keys and
grows the root partition. A bad setting is reported by name and its default used:
first boot never fails the boot. ``--register`` (pioreactor-register.service) joins
the cluster once the appliance answers: role both adds the leader as its own worker,
a worker asks its leader to add it (``POST /api/workers/setup``).

Standard library and attrs only: this runs before the appliance, without Twisted.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request  # reactor-safe: first boot is its own process, before the appliance and without Twisted
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import frozen

from .addresses import http_base
from .config import Config, ConfigError
from .resources.names import unit_name_problem

log = logging.getLogger("pioreactor-firstboot")

ROLES = ("leader", "worker", "both")
SETTINGS_NAME = "pioreactor.ini"
KEYS_NAME = "authorized_keys"
STAMP = "var/lib/pioreactor-firstboot/done"
REGISTER_PENDING = "var/lib/pioreactor-firstboot/register-pending"
DATA_DIR = "var/lib/pioreactor"
AVAHI_TEMPLATES = "usr/share/pioreactor/avahi"
NM_CONNECTION = "etc/NetworkManager/system-connections/pioreactor-wifi.nmconnection"
WPA_CONF = "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
WPA_UNIT = "wpa_supplicant@wlan0.service"
REGDOM_CONF = "etc/modprobe.d/pioreactor-wifi-country.conf"
WORKERS_URL = "http://127.0.0.1/api/workers"
CHRONY_CONF = "etc/chrony/conf.d/pioreactor.conf"
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
REGISTER_ATTEMPTS = 60
# A failed setup step (the leader cannot reach this worker yet), a busy or rate-limited leader, a server error.
RETRY_STATUSES = frozenset({404, 408, 409, 429, 500, 502, 503, 504})
REGISTER_INTERVAL_SECONDS = 10.0
# A partition is grown only when at least this many 512-byte sectors follow it.
GROW_MIN_SECTORS = 2048
HOSTNAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
COUNTRY_PATTERN = re.compile(r"[A-Z]{2}")
KNOWN_KEYS = {
    "pioreactor": {"role", "hostname", "leader_hostname", "leader_address"},
    "wifi": {"ssid", "password", "country"},
}

# run(argv, stdin text) -> (exit status, stdout): subprocess in production, a fake in tests.
Runner = Callable[[Sequence[str], str | None], tuple[int, str]]


@frozen
class Wifi:
    ssid: str
    password: str | None  # None: an open network
    country: str | None


@frozen
class Settings:
    """What pioreactor.ini decides, every value valid (defaults where it was bad or absent)."""

    role: str
    hostname: str
    leader_hostname: str
    leader_address: str
    wifi: Wifi | None

    @property
    def is_leader(self) -> bool:
        return self.role in ("leader", "both")

    @property
    def broker_address(self) -> str:
        return "localhost" if self.is_leader else self.leader_address


def default_hostname(machine_id: str) -> str:
    """pioreactor-<first 4 hex digits of the machine id> (random when there is none yet)."""
    digits = machine_id.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{4,}", digits[:32]):
        digits = uuid.uuid4().hex
    return f"pioreactor-{digits[:4]}"


def hostname_problem(name: str) -> str | None:
    """Why ``name`` cannot be this Pi's hostname (and unit name), or None if it can."""
    if not HOSTNAME_PATTERN.fullmatch(name):
        return "a hostname is 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'"
    return unit_name_problem(name)


def address_problem(address: str) -> str | None:
    if not address or len(address) > 253 or not re.fullmatch(r"[A-Za-z0-9.:_-]+", address):
        return "an address is a hostname, a .local name or an IP address"
    return None


def parse_settings(text: str | None, machine_id: str) -> tuple[Settings, list[str]]:
    """Settings from pioreactor.ini's text (None: no file), and the problems found, by name."""
    problems: list[str] = []
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    if text is not None:
        try:
            parser.read_string(text, SETTINGS_NAME)
        except configparser.Error as e:
            problems.append(f"{SETTINGS_NAME} cannot be read, every default is used: {e}")
            parser = configparser.ConfigParser()
    for section in parser.sections():
        if section not in KNOWN_KEYS:
            problems.append(f"[{section}] is not a known section and is ignored")
            continue
        for key in parser[section]:
            if key not in KNOWN_KEYS[section]:
                problems.append(f"[{section}] {key} is not a known setting and is ignored")

    def value(section: str, key: str) -> str | None:
        found = parser.get(section, key, fallback=None) if parser.has_section(section) else None
        return found.strip() if found is not None else None

    role = value("pioreactor", "role") or "both"
    if role not in ROLES:
        problems.append(f"[pioreactor] role = {role!r} must be one of {', '.join(ROLES)}; both is used")
        role = "both"
    fallback = default_hostname(machine_id)
    hostname = value("pioreactor", "hostname") or fallback
    problem = hostname_problem(hostname)
    if problem:
        problems.append(f"[pioreactor] hostname = {hostname!r}: {problem}; {fallback} is used")
        hostname = fallback
    given_leader, given_address = value("pioreactor", "leader_hostname"), value("pioreactor", "leader_address")
    if role == "worker":
        leader = given_leader or "leader"
        if given_leader is None:
            problems.append("[pioreactor] leader_hostname is not set for a worker; leader is used")
        problem = hostname_problem(leader)
        if problem:
            problems.append(f"[pioreactor] leader_hostname = {leader!r}: {problem}; leader is used")
            leader = "leader"
        address = given_address or f"{leader}.local"
        problem = address_problem(address)
        if problem:
            address = f"{leader}.local"
            problems.append(f"[pioreactor] leader_address = {given_address!r}: {problem}; {address} is used")
    else:
        leader, address = hostname, f"{hostname}.local"
        for key, given in (("leader_hostname", given_leader), ("leader_address", given_address)):
            if given is not None and given not in (leader, address):
                problems.append(f"[pioreactor] {key} is for workers; a {role} is its own leader, {given!r} is ignored")
    return Settings(role, hostname, leader, address, parse_wifi(parser, problems)), problems


def parse_wifi(parser: configparser.ConfigParser, problems: list[str]) -> Wifi | None:
    if not parser.has_section("wifi"):
        return None
    section = parser["wifi"]
    ssid = section.get("ssid", "").strip()
    if not ssid or len(ssid.encode()) > 32 or not ssid.isprintable():
        problems.append(f"[wifi] ssid = {ssid!r} must be 1 to 32 bytes of printable text; Wi-Fi is not configured")
        return None
    password = section.get("password", "").strip() or None
    if password is not None and not (8 <= len(password) <= 63 and password.isascii() and password.isprintable()):
        problems.append("[wifi] password must be 8 to 63 printable ASCII characters (or absent for an open network); Wi-Fi is not configured")
        return None
    country = section.get("country", "").strip().upper() or None
    if country is not None and not COUNTRY_PATTERN.fullmatch(country):
        problems.append(f"[wifi] country = {country!r} must be a two-letter ISO 3166 code; the radio's default is used")
        country = None
    elif country is None:
        problems.append("[wifi] country is not set; the radio's default (the most restrictive) is used")
    return Wifi(ssid, password, country)


def wpa_psk(wifi: Wifi) -> str:
    """The WPA pre-shared key (PBKDF2 of the passphrase): no quoting issues, no plain passphrase on disk."""
    assert wifi.password is not None
    return hashlib.pbkdf2_hmac("sha1", wifi.password.encode(), wifi.ssid.encode(), 4096, 32).hex()


def network_manager_profile(wifi: Wifi, connection_uuid: str) -> str:
    # The SSID as a byte list, which NetworkManager's keyfile takes whatever characters it has.
    ssid = "".join(f"{byte};" for byte in wifi.ssid.encode())
    lines = [
        "[connection]", "id=pioreactor-wifi", f"uuid={connection_uuid}", "type=wifi", "autoconnect=true", "",
        "[wifi]", "mode=infrastructure", f"ssid={ssid}", "",
    ]
    if wifi.password is not None:
        lines += ["[wifi-security]", "key-mgmt=wpa-psk", f"psk={wpa_psk(wifi)}", ""]
    lines += ["[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
    return "\n".join(lines)


def wpa_supplicant_conf(wifi: Wifi) -> str:
    lines = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]
    if wifi.country:
        lines.append(f"country={wifi.country}")
    key = f"\tpsk={wpa_psk(wifi)}" if wifi.password is not None else "\tkey_mgmt=NONE"
    # An unquoted SSID is hex: no quoting issues.
    lines += ["", "network={", f"\tssid={wifi.ssid.encode().hex()}", key, "}", ""]
    return "\n".join(lines)


def role_files(settings: Settings) -> dict[str, str]:
    """The role's files in /etc: the appliance's environment (and the leader marker), and its clock."""
    role = "leader" if settings.is_leader else "worker"
    files = {
        "etc/pioreactor/appliance.env": f"PIOREACTOR_ROLE={role}\nPIOREACTOR_UNIT={settings.hostname}\n",
        CHRONY_CONF: chrony_conf(settings),
    }
    if settings.is_leader:
        files["etc/pioreactor/leader"] = ""
    return files


def chrony_conf(settings: Settings) -> str:
    """One clock for the cluster, with or without internet: the leader serves its time on the lab's
    networks (even unsynchronised: a Pi has no battery clock), and workers follow it first."""
    if settings.is_leader:
        allowed = "".join(f"allow {network}\n" for network in PRIVATE_NETWORKS)
        return f"# Written by pioreactor first boot: this leader is its workers' clock.\n{allowed}local stratum 10\n"
    return f"# Written by pioreactor first boot: this worker keeps its leader's time.\nserver {ntp_host(settings.leader_address)} iburst prefer\n"


def ntp_host(address: str) -> str:
    """The host of ``leader_address`` (``host:port`` names the leader's HTTP port, not NTP's)."""
    return address.split(":")[0] if address.count(":") == 1 else address


def avahi_services(role: str) -> list[str]:
    """The avahi service files (from systemd/avahi/) this role advertises."""
    names = ["pioreactor-http.service"]
    if role in ("worker", "both"):
        names.append("pioreactor-pio-worker.service")
    if role in ("leader", "both"):
        names.append("pioreactor-mqtt.service")
    return names


def hosts_text(current: str, hostname: str) -> str:
    """/etc/hosts with its 127.0.1.1 line naming ``hostname`` (added when missing)."""
    entry = f"127.0.1.1\t{hostname}"
    lines = [entry if line.split()[:1] == ["127.0.1.1"] else line for line in current.splitlines()]
    if entry not in lines:
        lines.append(entry)
    return "\n".join(lines) + "\n"


def cluster_config(current: str | None, settings: Settings) -> str:
    """The data directory's config.ini with the topology and broker of this role (other settings kept)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case, as Config reads them
    if current:
        parser.read_string(current)
    for section, key, value in (
        ("cluster.topology", "leader_hostname", settings.leader_hostname),
        ("cluster.topology", "leader_address", settings.leader_address),
        ("mqtt", "broker_address", settings.broker_address),
    ):
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value)
    lines: list[str] = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines += [f"{key}={value}" for key, value in parser.items(section)]
        lines.append("")
    return "\n".join(lines)


def ids_of(root: Path, user: str) -> tuple[int, int, Path] | None:
    """(uid, gid, home) of ``user`` in ROOT's /etc/passwd, or None."""
    try:
        lines = (root / "etc/passwd").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == user:
            return int(fields[2]), int(fields[3]), Path(fields[5])
    return None


class Writer:
    """Writes files under ROOT with their modes; chowns only when running as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.as_root = os.geteuid() == 0

    def write(self, relative: str, text: str, mode: int = 0o644, owner: str | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.firstboot")
        temporary.write_text(text)
        temporary.chmod(mode)
        self.chown(temporary, owner)
        temporary.replace(path)
        log.info("wrote /%s", relative)
        return path

    def chown(self, path: Path, owner: str | None) -> None:
        if owner is None or not self.as_root:
            return
        ids = ids_of(self.root, owner)
        if ids is None:
            log.warning("no user %s: /%s stays owned by root", owner, path.relative_to(self.root))
            return
        os.chown(path, ids[0], ids[1])


def write_files(root: Path, boot: Path, settings: Settings) -> None:
    """Every file first boot writes under ROOT, for this role and these settings."""
    writer = Writer(root)
    for relative, text in role_files(settings).items():
        writer.write(relative, text)
    if not settings.is_leader:
        (root / "etc/pioreactor/leader").unlink(missing_ok=True)
    writer.write("etc/hostname", f"{settings.hostname}\n")
    hosts = root / "etc/hosts"
    writer.write("etc/hosts", hosts_text(hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n", settings.hostname))
    config = root / DATA_DIR / "config.ini"
    writer.write(f"{DATA_DIR}/config.ini", cluster_config(config.read_text() if config.exists() else None, settings), 0o644, "pioreactor")
    write_avahi(root, settings.role)
    if settings.wifi is not None:
        write_wifi(writer, settings.wifi)
    write_authorized_keys(writer, boot / KEYS_NAME)
    if settings.role != "leader":
        writer.write(REGISTER_PENDING, "", 0o644, "pioreactor")


def write_avahi(root: Path, role: str) -> None:
    services = root / "etc/avahi/services"
    services.mkdir(parents=True, exist_ok=True)
    wanted = avahi_services(role)
    for stale in services.glob("pioreactor-*.service"):
        if stale.name not in wanted:
            stale.unlink()
    for name in wanted:
        shutil.copyfile(root / AVAHI_TEMPLATES / name, services / name)
        (services / name).chmod(0o644)
        log.info("advertising /etc/avahi/services/%s", name)


def write_wifi(writer: Writer, wifi: Wifi) -> None:
    """A NetworkManager profile where NetworkManager is installed, else wpa_supplicant for wlan0."""
    if wifi.country:
        # The regulatory domain for either: the kernel's wireless core reads it when it loads.
        writer.write(REGDOM_CONF, f"options cfg80211 ieee80211_regdom={wifi.country}\n")
    if (writer.root / "usr/sbin/NetworkManager").exists():
        writer.write(NM_CONNECTION, network_manager_profile(wifi, str(uuid.uuid4())), 0o600)
        return
    writer.write(WPA_CONF, wpa_supplicant_conf(wifi), 0o600)
    wants = writer.root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / WPA_UNIT
    link.unlink(missing_ok=True)
    link.symlink_to("/lib/systemd/system/wpa_supplicant@.service")
    log.info("enabled %s", WPA_UNIT)


def write_authorized_keys(writer: Writer, source: Path) -> None:
    if not source.exists():
        log.warning("no %s on the boot partition: nobody can log in over SSH", KEYS_NAME)
        return
    ids = ids_of(writer.root, "lab")
    home = ids[2] if ids else Path("/home/lab")
    ssh = writer.root / home.relative_to("/") / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    ssh.chmod(0o700)
    writer.chown(ssh, "lab")
    writer.write(str((ssh / "authorized_keys").relative_to(writer.root)), source.read_text(), 0o600, "lab")


def run_command(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
    """Run one command (an argument list, no shell); a missing program is exit status 127."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=1800, check=False)  # reactor-safe: no reactor here
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    if done.returncode != 0:
        log.warning("%s exited %d: %s", " ".join(argv), done.returncode, done.stderr.strip())
    return done.returncode, done.stdout


def grow_root(run: Runner, sys_block: Path) -> None:
    """Grow the root partition and file system into the free space after it, if any."""
    status, source = run(["findmnt", "--noheadings", "--output", "SOURCE", "/"], None)
    name = Path(source.strip()).name
    partition = sys_block / name
    if status != 0 or not (partition / "partition").exists():
        log.warning("the root file system's device %r is not a partition: not grown", source.strip())
        return
    disk = partition.resolve().parent
    number = (partition / "partition").read_text().strip()
    start = int((partition / "start").read_text())
    end = start + int((partition / "size").read_text())
    later = [p for p in disk.iterdir() if (p / "start").exists() and int((p / "start").read_text()) > start]
    free = int((disk / "size").read_text()) - end
    if later or free < GROW_MIN_SECTORS:
        log.info("the root partition /dev/%s is already as large as it can be", name)
        return
    device = f"/dev/{disk.name}"
    log.info("growing /dev/%s by %d MiB", name, free // 2048)
    for argv, stdin in (
        (["sfdisk", "--no-reread", "-N", number, device], ", +\n"),
        (["partx", "-u", device], None),
        (["resize2fs", f"/dev/{name}"], None),
    ):
        if run(argv, stdin)[0] != 0:
            return


def system_actions(run: Runner, settings: Settings, sys_block: Path) -> None:
    """What only the running system can do; every failure is logged, none is fatal."""
    run(["hostname", settings.hostname], None)
    run(["ssh-keygen", "-A"], None)
    if settings.wifi is not None and Path("/etc/systemd/system/multi-user.target.wants", WPA_UNIT).is_symlink():
        # Enabled after systemd read its units: start it this boot as well.
        run(["systemctl", "--no-block", "start", WPA_UNIT], None)
    grow_root(run, sys_block)


def first_boot(root: Path, boot: Path, system: bool, run: Runner = run_command, sys_block: Path = Path("/sys/class/block")) -> bool:
    """Everything first boot does, once (False when the stamp says it already ran)."""
    stamp = root / STAMP
    if stamp.exists():
        log.info("first boot already ran (/%s)", STAMP)
        return False
    settings_file = boot / SETTINGS_NAME
    text = settings_file.read_text(errors="replace") if settings_file.exists() else None
    if text is None:
        log.info("no %s on the boot partition: every default is used", SETTINGS_NAME)
    machine_id = root / "etc/machine-id"
    settings, problems = parse_settings(text, machine_id.read_text() if machine_id.exists() else "")
    for problem in problems:
        log.error("%s: %s", SETTINGS_NAME, problem)
    log.info("role %s, hostname %s, leader %s at %s", settings.role, settings.hostname, settings.leader_hostname, settings.leader_address)
    steps = [lambda: write_files(root, boot, settings)]
    if system:
        steps.append(lambda: system_actions(run, settings, sys_block))
    for step in steps:
        try:
            step()
        except Exception:  # a half-configured Pi still boots, and says what went wrong
            log.exception("first boot could not finish a step")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text("")
    return True


def register(
    root: Path,
    hostname: str,
    urlopen: Callable[..., object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    own_ipv4: Callable[[str, int], str | None] | None = None,
) -> bool:  # reactor-safe: its own process
    """Join the cluster once the appliance answers: a leader (role both) adds itself to its workers;
    a worker asks its leader to add it (``POST /api/workers/setup``), retrying while either starts.

    A refusal that retrying cannot change (a 4xx other than a failed step, a busy leader or a rate
    limit) ends at once; the pending file stays, so the next boot tries again.
    """
    pending = root / REGISTER_PENDING
    if not pending.exists():
        return True
    # Cluster traffic stays on the lab's network: never through a proxy the environment may name.
    urlopen = urlopen or urllib.request.build_opener(urllib.request.ProxyHandler({})).open  # reactor-safe: its own process
    try:
        role = env_of(root).get("PIOREACTOR_ROLE", "worker")
        make_request = (lambda: own_worker_request(hostname)) if role == "leader" else join_request(root, hostname, own_ipv4 or ipv4_towards)
    except (OSError, ValueError, KeyError, ConfigError) as e:
        log.error("cannot join the cluster: %s", e)
        return False
    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        request = make_request()
        try:
            urlopen(request, timeout=10)
        except urllib.error.HTTPError as e:
            why = _error_text(e)
            if e.code not in RETRY_STATUSES:
                log.error("%s refused to add %s (%d): %s; add it from the leader's UI", request.full_url, hostname, e.code, why)
                return False
            log.info("adding %s, attempt %d: %s answered %d: %s", hostname, attempt, request.full_url, e.code, why)
        except (urllib.error.URLError, OSError) as e:
            log.info("adding %s, attempt %d: %s: %s", hostname, attempt, request.full_url, e)
        else:
            pending.unlink()
            log.info("%s is a worker of its cluster (%s)", hostname, request.full_url)
            return True
        if attempt < REGISTER_ATTEMPTS:
            sleep(REGISTER_INTERVAL_SECONDS)
    log.error("could not add %s to its cluster: add it from the leader's UI", hostname)
    return False


def own_worker_request(hostname: str) -> urllib.request.Request:  # reactor-safe: its own process
    body = json.dumps({"pioreactor_unit": hostname}).encode()
    return urllib.request.Request(WORKERS_URL, data=body, method="PUT", headers={"Content-Type": "application/json"})  # reactor-safe: its own process


def join_request(root: Path, hostname: str, own_ipv4: Callable[[str, int], str | None]) -> Callable[[], urllib.request.Request]:  # reactor-safe: its own process
    """Requests for the leader's ``/api/workers/setup``, with this worker's model and its address as
    the leader would reach it (asked again at each attempt: DHCP may not have answered yet)."""
    config = Config.load(root / DATA_DIR)
    base = http_base(config.get_str("cluster.topology", "leader_address"), config.get_int("ui", "port"))
    url = f"{base}/api/workers/setup"
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    model = {"name": hostname, "model": config.get_str("hardware", "model"), "version": config.get_str("hardware", "model_version")}

    def make() -> urllib.request.Request:  # reactor-safe: its own process
        address = own_ipv4(host, port)
        body = json.dumps({**model, "ipv4_address": address} if address else model).encode()
        return urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})  # reactor-safe: its own process

    return make


def ipv4_towards(host: str, port: int) -> str | None:
    """This Pi's IPv4 address on the route to ``host`` (no packet is sent); None if there is none yet."""
    try:
        destination = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(destination)
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _error_text(error: urllib.error.HTTPError) -> str:
    """The appliance's JSON error (its ``cause``, else ``error``), or the status line."""
    try:
        body = json.loads(error.read(65536))
        return str(body.get("cause") or body.get("error"))
    except (OSError, ValueError, AttributeError):
        return str(error.reason)


def env_of(root: Path) -> dict[str, str]:
    """/etc/pioreactor/appliance.env, which first boot wrote."""
    env = root / "etc/pioreactor/appliance.env"
    pairs = (line.partition("=") for line in env.read_text().splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def unit_of(root: Path) -> str:
    try:
        return env_of(root)["PIOREACTOR_UNIT"]
    except KeyError:
        raise SystemExit(f"no PIOREACTOR_UNIT in {root / 'etc/pioreactor/appliance.env'}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pioreactor_appliance.firstboot", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="the root file system to configure (default /)")
    parser.add_argument("--boot", type=Path, default=Path("/boot/firmware"), help="the boot partition (default /boot/firmware)")
    parser.add_argument("--system", action="store_true", help="also act on the running system (implied by --root /)")
    parser.add_argument("--register", action="store_true", help="join the cluster: role both adds itself, a worker asks its leader")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s", stream=sys.stdout)
    if options.register:
        return 0 if register(options.root, unit_of(options.root)) else 1
    first_boot(options.root, options.boot, options.system or options.root.resolve() == Path("/"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
