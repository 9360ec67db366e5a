"""Private Postfix + Dovecot instances on loopback ports, for integration tests.

A ``MailStack`` owns one directory (``workdir``) and runs, entirely inside it:

* a Postfix instance (own config_directory, queue_directory, data_directory,
  log file written by postlogd) with two plaintext smtpd services on
  127.0.0.1: ``smtp_port`` (MX-like: relays for mynetworks = 127.0.0.0/8 and
  SASL-authenticated clients, accepts mail for ``domain``) and
  ``submission_port`` (only SASL-authenticated clients may send);
  delivery into Maildirs with virtual(8); mail for every other domain is
  discarded (``default_transport = discard``), nothing ever leaves the machine;
* a Dovecot instance (own base_dir, state_dir, config and log file) with a
  plaintext POP3 listener on 127.0.0.1:``pop3_port`` and the SASL auth socket
  that Postfix uses, users from a passwd-file (alice/alicepw, bob/bobpw).

It never reads or writes /etc/postfix/main.cf, /etc/dovecot or the system's
spool; several instances can run at the same time.  Python stdlib only; the
servers must already be installed (see ``MailStack.available()``) and the
process must be root (the Postfix master and Dovecot start as root and drop
privileges themselves).
"""

from __future__ import annotations

import atexit
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ports import free_port

__all__ = [
    "MailStack",
    "MailStackError",
    "free_port",
    "proxy_v1_header",
    "DEFAULT_USERS",
    "DEFAULT_DOMAIN",
]

DEFAULT_DOMAIN = "example.test"
DEFAULT_USERS = {"alice": "alicepw", "bob": "bobpw"}

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
POSTFIX_DAEMON_DIR = "/usr/lib/postfix/sbin"
DOVECOT_LIBEXEC = "/usr/lib/dovecot"

# Debian packages that provide everything above (plus the clients the
# integration tests use).  Kept here so that skip messages can name them.
DEBIAN_PACKAGES = ("postfix", "dovecot-core", "dovecot-pop3d")

# Mail is delivered and read as this unprivileged account (exists on every
# Debian system; we never create system users).
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"

_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MailStackError(RuntimeError):
    """A server could not be configured, started or stopped."""


def proxy_v1_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A PROXY protocol v1 line (TCP4 or TCP6, chosen from ``src``)."""
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def _run(args, *, env=None, timeout=30, check=True, out=None) -> subprocess.CompletedProcess:
    """Run a short command.  Output goes to a file when ``out`` is given
    (daemons that fork may keep inherited pipes open forever)."""
    e = {"PATH": _ENV_PATH, "LANG": "C", "LC_ALL": "C"}
    if env:
        e.update(env)
    if out is not None:
        with open(out, "ab") as f:
            f.write(("$ " + " ".join(map(str, args)) + "\n").encode())
            f.flush()
            p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=f,
                               stderr=subprocess.STDOUT, env=e, timeout=timeout)
        p.stdout = Path(out).read_text(errors="replace")
    else:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, env=e, timeout=timeout)
        p.stdout = (p.stdout or "") + (p.stderr or "")
    if check and p.returncode != 0:
        raise MailStackError(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}")
    return p


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError as e:
        return f"({path}: {e})"
    return "\n".join(data.splitlines()[-lines:])


def _read_pid(path: Path) -> Optional[int]:
    try:
        txt = path.read_text().strip()
        return int(txt.split()[0]) if txt else None
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _pgid_members(pgid: int, exe_prefixes: Tuple[str, ...]) -> List[int]:
    """Live pids in process group ``pgid`` whose executable lies under one of
    ``exe_prefixes`` (guards against a recycled group id)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            if int(st[2]) != pgid or st[0] == "Z":
                continue
            exe = os.readlink(f"/proc/{d}/exe")
        except (OSError, ValueError, IndexError):
            continue
        if exe.startswith(exe_prefixes):
            pids.append(int(d))
    return pids


class MailStack:
    """One private Postfix + Dovecot pair.  See the module docstring.

    Options:
      workdir            directory to own (created; default: a new /tmp/mailstack-*)
      smtp_port, submission_port, pop3_port
                         loopback ports (default: free ports picked now)
      host               address the servers listen on (default 127.0.0.1)
      ipv6               also listen on ::1 (same port numbers)
      postfix_proxy      "none" | "haproxy": smtpd_upstream_proxy_protocol on
                         both smtpd services (PROXY v1 and v2 accepted)
      dovecot_proxy      haproxy = yes on the POP3 listener (trusted: loopback)
      xclient_hosts      smtpd_authorized_xclient_hosts, e.g. "127.0.0.0/8"
      legacy_bare_newline
                         True (default): smtpd takes a bare LF as line end,
                         so <LF>.<LF> ends DATA (smtpd_forbid_bare_newline = no,
                         or a Postfix that predates that parameter: see the
                         attributes bare_newline_param_known/_default/_setting);
                         False: "= yes" (normalize: only <CR><LF>.<CR><LF>
                         ends DATA) with no exclusions (MailStackError if
                         this Postfix lacks the parameter)
      disable_plaintext_auth
                         Dovecot disable_plaintext_auth (default False).  Note
                         Dovecot treats loopback-to-loopback connections as
                         secure, so it only bites with a PROXY'd remote address.
      postconf           dict of extra main.cf settings (override ours)
      dovecot_conf       extra text appended to dovecot.conf
      users              {name: password} (default alice/alicepw, bob/bobpw)
      domain             the local mail domain (default example.test)
      start_timeout      seconds to wait for the banners (default 20)
    """

    def __init__(
        self,
        workdir=None,
        *,
        smtp_port: Optional[int] = None,
        submission_port: Optional[int] = None,
        pop3_port: Optional[int] = None,
        host: str = "127.0.0.1",
        ipv6: bool = False,
        postfix_proxy: str = "none",
        dovecot_proxy: bool = False,
        xclient_hosts: str = "",
        legacy_bare_newline: bool = True,
        disable_plaintext_auth: bool = False,
        postconf: Optional[Dict[str, str]] = None,
        dovecot_conf: str = "",
        users: Optional[Dict[str, str]] = None,
        domain: str = DEFAULT_DOMAIN,
        start_timeout: float = 20.0,
    ):
        if postfix_proxy not in ("none", "haproxy"):
            raise ValueError(f"postfix_proxy must be 'none' or 'haproxy', not {postfix_proxy!r}")
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="mailstack-", dir="/tmp")
        self.workdir = Path(workdir).resolve()
        self.name = "ms" + secrets.token_hex(4)
        self.host = host
        self.ipv6 = ipv6
        self.smtp_port = smtp_port or free_port(host)
        self.submission_port = submission_port or free_port(host)
        self.pop3_port = pop3_port or free_port(host)
        ports = {self.smtp_port, self.submission_port, self.pop3_port}
        while len(ports) < 3:  # free_port() may hand out the same port twice
            self.submission_port = free_port(host)
            self.pop3_port = free_port(host)
            ports = {self.smtp_port, self.submission_port, self.pop3_port}
        self.postfix_proxy = postfix_proxy
        self.dovecot_proxy = bool(dovecot_proxy)
        self.xclient_hosts = xclient_hosts
        self.legacy_bare_newline = bool(legacy_bare_newline)
        self.disable_plaintext_auth = bool(disable_plaintext_auth)
        self.extra_postconf = dict(postconf or {})
        self.extra_dovecot_conf = dovecot_conf
        self.users = dict(users if users is not None else DEFAULT_USERS)
        self.domain = domain
        self.start_timeout = start_timeout

        # Layout.
        w = self.workdir
        self.postfix_dir = w / "postfix"
        self.postfix_config_dir = self.postfix_dir / "etc"
        self.queue_dir = self.postfix_dir / "spool"
        self.data_dir = self.postfix_dir / "data"
        self.postfix_log_path = self.postfix_dir / "maillog"
        self.dovecot_dir = w / "dovecot"
        self.dovecot_conf_path = self.dovecot_dir / "dovecot.conf"
        self.dovecot_base_dir = self.dovecot_dir / "run"
        self.dovecot_state_dir = self.dovecot_dir / "state"
        self.dovecot_log_path = self.dovecot_dir / "dovecot.log"
        self.passwd_file = self.dovecot_dir / "users"
        self.mail_dir = w / "mail"
        self.sasl_socket = self.queue_dir / "private" / "auth"

        self.postfix_version: Optional[str] = None
        self.dovecot_version: Optional[str] = None
        # Whether this Postfix knows smtpd_forbid_bare_newline (3.5.23+,
        # 3.6.13+, 3.7.9+, 3.8.4+, 3.9+) and its built-in default.
        self.bare_newline_param_known: Optional[bool] = None
        self.bare_newline_default: Optional[str] = None
        # The value we put into main.cf (None: parameter unknown, not set).
        self.bare_newline_setting: Optional[str] = None

        self._started = False
        self._postfix_pgid: Optional[int] = None
        self._dovecot_pgid: Optional[int] = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ info

    @property
    def smtp_addr(self) -> Tuple[str, int]:
        return (self.host, self.smtp_port)

    @property
    def submission_addr(self) -> Tuple[str, int]:
        return (self.host, self.submission_port)

    @property
    def pop3_addr(self) -> Tuple[str, int]:
        return (self.host, self.pop3_port)

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def __repr__(self) -> str:
        return (f"<MailStack {self.name} smtp={self.host}:{self.smtp_port} "
                f"submission={self.submission_port} pop3={self.pop3_port} "
                f"dir={self.workdir}>")

    @staticmethod
    def available() -> Tuple[bool, str]:
        """(True, "") if Postfix and Dovecot can be run here, else (False, why)."""
        if os.geteuid() != 0:
            return False, "MailStack needs root (Postfix master and Dovecot start as root)"
        missing = [p for p in (POSTFIX, POSTCONF, POSTQUEUE, DOVECOT, DOVEADM,
                               f"{POSTFIX_DAEMON_DIR}/master",
                               f"{POSTFIX_DAEMON_DIR}/smtpd",
                               f"{POSTFIX_DAEMON_DIR}/virtual",
                               f"{POSTFIX_DAEMON_DIR}/postlogd",
                               f"{DOVECOT_LIBEXEC}/pop3",
                               f"{DOVECOT_LIBEXEC}/pop3-login",
                               f"{DOVECOT_LIBEXEC}/auth")
                   if not os.access(p, os.X_OK)]
        if missing:
            return False, ("not installed: " + ", ".join(missing) +
                           " (apt-get install " + " ".join(DEBIAN_PACKAGES) + ")")
        for u in ("postfix", "dovecot", "dovenull", MAIL_USER):
            try:
                pwd.getpwnam(u)
            except KeyError:
                return False, f"system user {u!r} is missing (reinstall {' '.join(DEBIAN_PACKAGES)})"
        for g in ("postdrop", MAIL_GROUP):
            try:
                grp.getgrnam(g)
            except KeyError:
                return False, f"system group {g!r} is missing"
        return True, ""

    # --------------------------------------------------------------- configs

    def _probe_versions(self) -> None:
        self.postfix_version = _run([POSTCONF, "-d", "-h", "mail_version"]).stdout.strip()
        self.dovecot_version = _run([DOVECOT, "--version"]).stdout.strip().split()[0]
        p = _run([POSTCONF, "-d", "-h", "smtpd_forbid_bare_newline"], check=False)
        known = p.returncode == 0 and "unknown parameter" not in p.stdout and p.stdout.strip() != ""
        self.bare_newline_param_known = known
        self.bare_newline_default = p.stdout.strip() if known else None

    def _check_traversable(self) -> None:
        """The mail user, postfix and dovecot must be able to reach workdir."""
        p = self.workdir
        for d in [p, *p.parents]:
            mode = d.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise MailStackError(
                    f"{d} is not searchable by others (mode {oct(mode & 0o777)}); "
                    f"unprivileged Postfix/Dovecot processes could not reach {self.workdir}. "
                    "Use a workdir under /tmp made with MailStack() defaults or chmod o+x.")

    def _main_cf(self) -> Dict[str, str]:
        mail_uid = pwd.getpwnam(MAIL_USER).pw_uid
        mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid
        inet = [self.host] + (["[::1]"] if self.ipv6 else [])
        mynetworks = ["127.0.0.0/8"] + (["[::1]/128"] if self.ipv6 else [])
        cf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "multi_instance_name": f"postfix-{self.name}",
            "syslog_name": f"postfix-{self.name}",
            "maillog_file": str(self.postfix_log_path),
            "maillog_file_prefixes": str(self.workdir),
            "myhostname": f"mail.{self.domain}",
            "mydomain": self.domain,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": ", ".join(inet),
            "inet_protocols": "all" if self.ipv6 else "ipv4",
            "mynetworks": " ".join(mynetworks),
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "virtual_alias_maps": "",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mail_dir),
            "virtual_mailbox_maps": f"texthash:{self.postfix_config_dir}/vmailbox",
            "virtual_uid_maps": f"static:{mail_uid}",
            "virtual_gid_maps": f"static:{mail_gid}",
            "virtual_minimum_uid": "1",
            # Nothing ever leaves the machine: other domains are discarded.
            "local_transport": "error:5.1.1 local delivery disabled (mailstack)",
            "default_transport": "discard:outbound delivery disabled (mailstack)",
            "relay_transport": "discard:outbound delivery disabled (mailstack)",
            "smtpd_banner": "$myhostname ESMTP Postfix (mailstack)",
            "smtpd_relay_restrictions":
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": "private/auth",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_security_level": "none",
            "smtpd_peername_lookup": "no",          # no DNS for PROXY'd addresses
            "smtpd_authorized_xclient_hosts": self.xclient_hosts,
            "smtpd_upstream_proxy_protocol": "haproxy" if self.postfix_proxy == "haproxy" else "",
            # Tests send many bad commands / wrong passwords: answer fast.
            "smtpd_error_sleep_time": "0s",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "smtpd_junk_command_limit": "1000",
            "smtpd_client_connection_count_limit": "1000",
            # Deliver bodies unchanged: no header rewriting for loopback
            # clients, no 8bit->QP conversion.
            "local_header_rewrite_clients": "",
            "disable_mime_output_conversion": "yes",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "in_flow_delay": "0s",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0h",
        }
        if self.bare_newline_param_known:
            # "yes" is what Postfix >= 3.9 calls "normalize" (Debian 12's
            # 3.7.11 too): bare LF is a line end inside commands and content,
            # but only <CR><LF>.<CR><LF> ends DATA.  Use postconf=
            # {"smtpd_forbid_bare_newline": "reject"} for reply-and-disconnect.
            self.bare_newline_setting = "no" if self.legacy_bare_newline else "yes"
            cf["smtpd_forbid_bare_newline"] = self.bare_newline_setting
            if not self.legacy_bare_newline:
                # the default exclusion is $mynetworks, i.e. all of loopback
                cf["smtpd_forbid_bare_newline_exclusions"] = ""
        elif not self.legacy_bare_newline:
            raise MailStackError(
                f"Postfix {self.postfix_version} does not know smtpd_forbid_bare_newline; "
                "legacy_bare_newline=False is impossible")
        cf.update({k: str(v) for k, v in self.extra_postconf.items()})
        return cf

    def _master_cf(self) -> str:
        sub_opts = (f"-o syslog_name=postfix-{self.name}/submission "
                    "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject "
                    "-o smtpd_recipient_restrictions=permit_sasl_authenticated,reject")
        hosts = [self.host] + (["[::1]"] if self.ipv6 else [])
        lines = ["# generated by mailstack.py; chroot is off everywhere",
                 "# service type private unpriv chroot wakeup maxproc command"]
        for h in hosts:
            hh = f"[{h}]" if ":" in h and not h.startswith("[") else h
            lines.append(f"{hh}:{self.smtp_port} inet n - n - - smtpd")
            lines.append(f"{hh}:{self.submission_port} inet n - n - - smtpd {sub_opts}")
        lines += [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "virtual unix - n n - - virtual",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(lines) + "\n"

    def _dovecot_conf(self) -> str:
        listen = self.host + (", ::1" if self.ipv6 else "")
        log = self.dovecot_log_path
        return f"""# generated by mailstack.py
instance_name = dovecot-{self.name}
base_dir = {self.dovecot_base_dir}
state_dir = {self.dovecot_state_dir}
protocols = pop3
listen = {listen}
ssl = no
log_path = {log}
info_log_path = {log}
debug_log_path = {log}
log_timestamp = "%Y-%m-%d %H:%M:%S "
login_greeting = Dovecot ready (mailstack).
auth_mechanisms = plain login
disable_plaintext_auth = {"yes" if self.disable_plaintext_auth else "no"}
auth_verbose = yes
auth_failure_delay = 0
auth_cache_size = 0
haproxy_trusted_networks = 127.0.0.0/8 ::1
mail_location = maildir:{self.mail_dir}/%n/Maildir
pop3_uidl_format = %08Xu%08Xv

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {self.passwd_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {self.passwd_file}
}}

service pop3-login {{
  inet_listener pop3 {{
    address = {listen}
    port = {self.pop3_port}
    haproxy = {"yes" if self.dovecot_proxy else "no"}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service auth {{
  unix_listener {self.sasl_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
# No per-IP auth penalty (2, 4, 8, 15 s waits after failures): without the
# anvil-auth-penalty socket the auth process disables it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol pop3 {{
  mail_max_userip_connections = 1000
}}
{self.extra_dovecot_conf}
"""

    def _write_configs(self) -> None:
        pf_uid = pwd.getpwnam("postfix").pw_uid
        pf_gid = grp.getgrnam("postfix").gr_gid
        mail_uid = pwd.getpwnam(MAIL_USER).pw_uid
        mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid

        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self._check_traversable()
        for d in (self.postfix_dir, self.postfix_config_dir, self.queue_dir,
                  self.dovecot_dir, self.dovecot_base_dir, self.dovecot_state_dir,
                  self.mail_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        # Postfix wants these owned by the mail_owner; post-install
        # create-missing (run by "postfix start") makes the rest of the queue.
        for d in (self.data_dir, self.queue_dir / "private"):
            d.mkdir(exist_ok=True)
            os.chown(d, pf_uid, pf_gid)
            os.chmod(d, 0o700)

        self._probe_versions()
        main = self._main_cf()
        (self.postfix_config_dir / "main.cf").write_text(
            "# generated by mailstack.py\n" +
            "".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.postfix_config_dir / "master.cf").write_text(self._master_cf())
        (self.postfix_config_dir / "vmailbox").write_text(
            "".join(f"{u}@{self.domain} {u}/Maildir/\n" for u in self.users))

        # passwd-file: user:{PLAIN}pass:uid:gid::home
        lines = []
        for u, pw in self.users.items():
            if ":" in u or ":" in pw or "\n" in u + pw:
                raise ValueError(f"bad user/password for passwd-file: {u!r}")
            home = self.mail_dir / u
            lines.append(f"{u}:{{PLAIN}}{pw}:{mail_uid}:{mail_gid}::{home}::\n")
            for sub in ("", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"):
                p = Path(f"{home}{sub}")
                p.mkdir(exist_ok=True)
                os.chown(p, mail_uid, mail_gid)
                os.chmod(p, 0o700)
        # Postfix waits until a table/config file is >1 s old before it
        # trusts it (dict_load_file); backdate ours to start without delay.
        past = time.time() - 60
        for f in ("main.cf", "master.cf", "vmailbox"):
            os.utime(self.postfix_config_dir / f, (past, past))
        self.passwd_file.write_text("".join(lines))
        os.chmod(self.passwd_file, 0o644)   # test passwords; read by the auth process
        self.dovecot_conf_path.write_text(self._dovecot_conf())
        self.postfix_log_path.touch()
        self.dovecot_log_path.touch()

    # ------------------------------------------------------------- lifecycle

    @property
    def _pf_env(self) -> Dict[str, str]:
        return {"MAIL_CONFIG": str(self.postfix_config_dir)}

    def start(self) -> "MailStack":
        if self._started:
            return self
        ok, why = self.available()
        if not ok:
            raise MailStackError(why)
        self._write_configs()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        self._started = True
        try:
            out = self.workdir / "start.log"
            _run([DOVECOT, "-c", str(self.dovecot_conf_path)], out=out, timeout=30)
            _run([POSTFIX, "-c", str(self.postfix_config_dir), "start"],
                 env=self._pf_env, out=out, timeout=60)
            self._postfix_pgid = self._postfix_master_pid()
            self._dovecot_pgid = self._dovecot_master_pid()
            self._wait_ready()
        except Exception as e:
            msg = f"{self!r} did not start: {e}\n{self.diagnostics()}"
            self.stop()
            raise MailStackError(msg) from None
        return self

    def _postfix_master_pid(self) -> Optional[int]:
        return _read_pid(self.queue_dir / "pid" / "master.pid")

    def _dovecot_master_pid(self) -> Optional[int]:
        return _read_pid(self.dovecot_base_dir / "master.pid")

    def _probe(self, port: int, expect: bytes, proxied: bool, timeout: float) -> None:
        with socket.create_connection((self.host, port), timeout=timeout) as s:
            if proxied:
                sp = s.getsockname()[1]
                s.sendall(proxy_v1_header(self.host, self.host, sp, port))
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError(f"port {port} closed before the banner")
                buf += chunk
            if not buf.startswith(expect):
                raise ConnectionError(f"port {port}: unexpected banner {buf!r}")
            s.sendall(b"QUIT\r\n")
            try:
                s.recv(4096)
            except OSError:
                pass

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        todo = [(self.smtp_port, b"220 ", self.postfix_proxy == "haproxy"),
                (self.submission_port, b"220 ", self.postfix_proxy == "haproxy"),
                (self.pop3_port, b"+OK", self.dovecot_proxy)]
        last = None
        while todo:
            if time.monotonic() > deadline:
                raise MailStackError(
                    f"not ready after {self.start_timeout:.0f}s: port {todo[0][0]}: {last}")
            port, expect, proxied = todo[0]
            try:
                self._probe(port, expect, proxied, timeout=2.0)
                todo.pop(0)
            except OSError as e:
                last = e
                time.sleep(0.1)

    def diagnostics(self, lines: int = 40) -> str:
        return (f"--- start.log ---\n{_tail(self.workdir / 'start.log', lines)}\n"
                f"--- {self.postfix_log_path} ---\n{_tail(self.postfix_log_path, lines)}\n"
                f"--- {self.dovecot_log_path} ---\n{_tail(self.dovecot_log_path, lines)}\n")

    def stop(self) -> None:
        """Stop both servers and any leftover process of theirs.  Idempotent."""
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if not self._started:
            return
        self._started = False
        pf_pid = self._postfix_master_pid() or self._postfix_pgid
        dc_pid = self._dovecot_master_pid() or self._dovecot_pgid
        # SIGTERM to each master is exactly what "postfix stop" and
        # "dovecot stop" do, minus their 1-second polling sleeps.
        for pid, exe in ((pf_pid, (POSTFIX_DAEMON_DIR + "/master",)), (dc_pid, (DOVECOT,))):
            if pid and _pid_alive(pid) and _exe_of(pid).startswith(exe):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # Wait for the masters, then kill whatever is left in their groups.
        deadline = time.monotonic() + 5
        for pid in (pf_pid, dc_pid):
            while pid and _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        for pid, marks in ((pf_pid, (POSTFIX_DAEMON_DIR + "/", "/usr/sbin/post")),
                           (dc_pid, (DOVECOT_LIBEXEC + "/", DOVECOT))):
            if not pid:
                continue
            deadline = time.monotonic() + 3
            while True:
                victims = _pgid_members(pid, marks)
                if not victims or time.monotonic() > deadline:
                    break
                for victim in victims:
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.02)

    def __enter__(self) -> "MailStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cleanup(self) -> None:
        """stop() and remove the whole workdir."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._started

    # ------------------------------------------------------------------ logs

    def postfix_log(self) -> str:
        try:
            return self.postfix_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dovecot_log(self) -> str:
        try:
            return self.dovecot_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_path(self, which: str) -> Path:
        if which == "postfix":
            return self.postfix_log_path
        if which == "dovecot":
            return self.dovecot_log_path
        raise ValueError(f"which must be 'postfix' or 'dovecot', not {which!r}")

    def log_mark(self, which: str = "postfix") -> int:
        """Current size of a log; pass it as ``since`` to wait_log() to only
        look at what was logged afterwards."""
        try:
            return self._log_path(which).stat().st_size
        except FileNotFoundError:
            return 0

    def wait_log(self, regex, which: str = "postfix", timeout: float = 10.0,
                 since: int = 0) -> re.Match:
        """Wait until the log (from byte offset ``since``) matches ``regex``
        (re.MULTILINE); return the match or raise AssertionError with the
        log's tail."""
        rx = re.compile(regex, re.MULTILINE) if isinstance(regex, str) else regex
        path = self._log_path(which)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, "rb") as f:
                    f.seek(since)
                    text = f.read().decode(errors="replace")
            except FileNotFoundError:
                text = ""
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-30:])
                raise AssertionError(
                    f"{which} log did not match {rx.pattern!r} within {timeout}s; tail:\n{tail}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ mail

    def maildir_path(self, user: str) -> Path:
        return self.mail_dir / user / "Maildir"

    def maildir_messages(self, user: str) -> List[bytes]:
        """Raw bytes of the messages delivered to ``user`` (new/ and cur/),
        oldest first.  Files are stored with LF line ends (Maildir convention;
        POP3 RETR gives them back with CRLF) and begin with the headers the
        MTA prepends (Return-Path, Delivered-To, Received)."""
        base = self.maildir_path(user)
        files = []
        for sub in ("new", "cur"):
            d = base / sub
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                # virtual(8) names a file SECONDS.VdevIinodeMusec.host: in
                # one second, only the microseconds give the order.
                key = n.split(":", 1)[0]
                usec = re.search(r"M(\d+)", key)
                files.append((int(key.split(".", 1)[0]),
                              int(usec.group(1)) if usec else 0, key, d / n))
        files.sort()
        out = []
        for *_, p in files:
            try:
                out.append(p.read_bytes())
            except FileNotFoundError:
                # moved from new/ to cur/ by a POP3 session meanwhile
                matches = list((base / "cur").glob(p.name.split(":", 1)[0] + "*"))
                if matches:
                    out.append(matches[0].read_bytes())
        return out

    def wait_for_messages(self, user: str, n: int = 1, timeout: float = 10.0) -> List[bytes]:
        """Wait until ``user`` has at least ``n`` messages; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.maildir_messages(user)
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{user} has {len(msgs)} message(s), expected {n} within {timeout}s\n"
                    f"{self.mailq()}\n--- postfix log tail ---\n{_tail(self.postfix_log_path, 20)}")
            time.sleep(0.05)

    def clear_maildir(self, user: str) -> None:
        for sub in ("new", "cur"):
            for p in (self.maildir_path(user) / sub).iterdir():
                p.unlink()

    def flush_queue(self) -> None:
        """Ask Postfix to retry deferred mail now."""
        _run([POSTQUEUE, "-c", str(self.postfix_config_dir), "-f"],
             env=self._pf_env, check=False)

    def mailq(self) -> str:
        """Output of postqueue -p for this instance."""
        return _run([POSTQUEUE, "-c", str(self.postfix_config_dir), "-p"],
                    env=self._pf_env, check=False).stdout
