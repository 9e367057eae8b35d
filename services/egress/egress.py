"""ralex-egress: runs the agent's egress proxy (Squid) by the policy in ralex/egress.py.

  RALEX_AGENT_NETWORK=none      no proxy: each connection on the socket gets a 403 "the sandbox is offline"
  RALEX_AGENT_NETWORK=packages  Squid on 127.0.0.1:3128, the socket relayed to it by socat

The user's lists (/etc/ralex/sandbox/allow.txt, deny.txt; ralexctl sandbox allow/deny writes them)
are re-read every second and Squid reloads them: no restart. Squid's access log arrives here through a
FIFO: one line per request on stdout (ralexctl sandbox log) and counters on :9402/metrics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ralex import egress
from ralex.sinks import log_line

USER_LISTS = Path(os.environ.get("RALEX_SANDBOX_DIR", "/etc/ralex/sandbox"))
SOCKET = Path(os.environ.get("RALEX_EGRESS_SOCKET", "/run/ralex/egress/proxy.sock"))
RUN = Path(os.environ.get("RALEX_EGRESS_RUN", "/run/ralex-egress"))
METRICS_PORT = int(os.environ.get("RALEX_EGRESS_METRICS_PORT", "9402"))
SQUID_PORT = 3128
TEMPLATES = Path("/usr/share/squid/errors/templates")

SQUID_CONF = r"""\
http_port 127.0.0.1:{squid_port}
pid_filename none
cache_log stdio:/dev/stderr
logformat ralex %ts.%03tu %rm %>rd %>rP %>Hs %Ss %err_code
access_log stdio:{run}/access.fifo logformat=ralex
buffered_logs off
pinger_enable off
logfile_rotate 0
cache deny all
cache_mem 8 MB
memory_cache_shared off
netdb_filename none
coredump_dir /tmp
visible_hostname ralex-egress
httpd_suppress_version_string on
forwarded_for delete
via off
shutdown_lifetime 1 seconds
error_directory {run}/errors
{dns}acl denied_hosts dstdomain -n "{run}/deny.txt"
acl listed dstdomain -n "{run}/allow.txt"
acl by_address dstdom_regex -n ^[0-9.]+$ ^\[?[0-9a-f:]+\]?$
acl web_ports port 80 443
acl tls_port port 443
acl CONNECT method CONNECT
acl blocked dst {blocked}
deny_info ERR_RALEX_DENIED denied_hosts
deny_info ERR_RALEX_NOT_LISTED listed
deny_info ERR_RALEX_ADDRESS by_address
deny_info ERR_RALEX_PORT web_ports
deny_info ERR_RALEX_PORT tls_port
deny_info ERR_RALEX_BLOCKED blocked
# Names first (no DNS lookup for a name that is not listed), then where a listed name points.
http_access deny denied_hosts
http_access deny by_address
http_access deny !listed
http_access deny !web_ports
http_access deny CONNECT !tls_port
http_access deny blocked
http_access allow all
"""
# Squid needs at least one entry in a list file; a name under .invalid never matches a real host.
PLACEHOLDER = "nothing.ralex.invalid"


def say(text: str) -> None:
    print(log_line(f"ralex-egress: {text}"), flush=True)


class State:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.lists = egress.effective(mode, [], [])
        self.counts: Counter[tuple[str, str]] = Counter()
        self.signature: tuple[object, ...] = ()
        self.reloads = 0

    def read_lists(self) -> bool:
        """Re-read the user's lists; True when they changed (and the files Squid reads were rewritten)."""
        texts: list[str] = []
        for name in (egress.ALLOW_FILE, egress.DENY_FILE):
            path = USER_LISTS / name
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                text = ""
            except OSError as err:
                say(f"cannot read {path}: {err.strerror}; keeping the lists as they were")
                return False
            texts.append(text)
        if tuple(texts) == self.signature:
            return False
        self.signature = tuple(texts)
        allowed, problems = egress.parse_list(texts[0])
        denied, more = egress.parse_list(texts[1])
        for problem in problems:
            say(f"sandbox/{egress.ALLOW_FILE} {problem} (skipped)")
        for problem in more:
            say(f"sandbox/{egress.DENY_FILE} {problem} (skipped)")
        self.lists = egress.effective(self.mode, allowed, denied)
        for name, hosts in (("allow.txt", self.lists.allowed), ("deny.txt", self.lists.denied)):
            tmp = RUN / f".{name}"
            tmp.write_text("\n".join(hosts or (PLACEHOLDER,)) + "\n", encoding="ascii")
            tmp.replace(RUN / name)
        return True

    def metrics(self) -> str:
        out = [
            "# HELP ralex_egress_requests_total Requests from the agent's sandbox, by host (the list entry "
            "that names it, else other) and verdict.",
            "# TYPE ralex_egress_requests_total counter",
        ]
        for (host, verdict), n in sorted(self.counts.items()):
            out.append(f'ralex_egress_requests_total{{host="{_label(host)}",verdict="{_label(verdict)}"}} {n}')
        out += [
            "# HELP ralex_egress_mode The sandbox's network mode (RALEX_AGENT_NETWORK).",
            "# TYPE ralex_egress_mode gauge",
            *(f'ralex_egress_mode{{mode="{m}"}} {int(m == self.mode)}' for m in egress.NETWORK_MODES),
            "# HELP ralex_egress_allowed_hosts Entries on the allow-list in force.",
            "# TYPE ralex_egress_allowed_hosts gauge",
            f"ralex_egress_allowed_hosts {len(self.lists.allowed)}",
            "# HELP ralex_egress_reloads_total Times the proxy reloaded the lists after a change.",
            "# TYPE ralex_egress_reloads_total counter",
            f"ralex_egress_reloads_total {self.reloads}",
        ]
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class AccessLog(asyncio.Protocol):
    """Squid's access log, line by line from a FIFO (this process holds a writer too, so Squid's
    reopen on reload never ends the stream)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()[-4096:]
        for raw in lines:
            access = egress.parse_access(raw.decode("utf-8", "replace"))
            if access is None:
                continue
            label = egress.host_label(self.state.lists, access.host) if access.verdict != "not_listed" else "other"
            self.state.counts[(label, access.verdict)] += 1
            stamp = time.strftime("%H:%M:%S", time.localtime(access.at))
            print(log_line(f"{stamp} {access.verdict:<10} {access.method} {access.host}:{access.port} "
                           f"{access.status} {access.result}"), flush=True)


async def serve_metrics(state: State) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            if request.split(b" ")[1:2] == [b"/metrics"]:
                body, status = state.metrics().encode(), b"200 OK"
            else:
                body, status = b"ralex-egress: /metrics\n", b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", METRICS_PORT)
    async with server:
        await server.serve_forever()


async def serve_offline(state: State) -> None:
    """RALEX_AGENT_NETWORK=none: read the request line, answer 403 with what to do, count it."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            parts = line.decode("latin-1").split(" ")
            target = parts[1] if len(parts) > 1 else ""
            host = target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0][: egress.MAX_HOST]
            body = (egress.refusal("offline", host) + "\n").encode()
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            state.counts[("other", "offline")] += 1
            print(log_line(f"{time.strftime('%H:%M:%S')} offline    {parts[0][:16]} {host}"), flush=True)
        except (TimeoutError, ConnectionError, UnicodeError):
            pass
        finally:
            writer.close()

    SOCKET.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(handle, path=str(SOCKET))
    SOCKET.chmod(0o666)
    say(f"network none: the sandbox is offline; every request on {SOCKET} is refused with the fix")
    async with server:
        await server.serve_forever()


def resolvers(setting: str) -> list[str]:
    """RALEX_EGRESS_DNS: the resolvers Squid asks instead of the container's (names or addresses,
    e.g. a filtering DNS on your network); a name is resolved once, here, at start."""
    found = []
    for item in setting.replace(",", " ").split():
        try:
            found.append(socket.gethostbyname(item))
        except OSError:
            raise SystemExit(f"ralex-egress: RALEX_EGRESS_DNS names {log_line(item, 60)!r}, "
                             "which does not resolve") from None
    return found


def write_squid_files(blocked: list[str]) -> Path:
    errors = RUN / "errors"
    errors.mkdir(parents=True, exist_ok=True)
    for page in TEMPLATES.iterdir():
        shutil.copyfile(page, errors / page.name)
    for name, verdict in egress.ERROR_PAGES.items():
        text = egress.refusal(verdict, "%H")
        (errors / name).write_text(f"<html><body><pre>{text}</pre></body></html>\n", encoding="ascii")
    conf = RUN / "squid.conf"
    dns = resolvers(os.environ.get("RALEX_EGRESS_DNS", ""))
    conf.write_text(SQUID_CONF.format(squid_port=SQUID_PORT, run=RUN, blocked=" ".join(blocked),
                                      dns=f"dns_nameservers {' '.join(dns)}\n" if dns else ""), encoding="ascii")
    return conf


async def run_proxy(state: State) -> None:
    extra = os.environ.get("RALEX_EGRESS_BLOCK", "")
    for bad in egress.bad_nets(extra):
        say(f"RALEX_EGRESS_BLOCK: {log_line(bad, 60)!r} is not an address or network (skipped)")
    blocked = egress.blocked_nets(extra)
    state.read_lists()
    conf = write_squid_files(blocked)
    loop = asyncio.get_running_loop()
    fifo = RUN / "access.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.open(fifo, os.O_WRONLY)  # held for the process's life: no EOF between Squid's reopens
    await loop.connect_read_pipe(lambda: AccessLog(state), os.fdopen(reader, "rb", buffering=0))
    squid = await asyncio.create_subprocess_exec("squid", "-N", "-f", str(conf))
    for _ in range(1200):  # Squid listens within a second (a minute or more under arm64 emulation)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", SQUID_PORT)
            writer.close()
            break
        except OSError:
            if squid.returncode is not None:
                raise SystemExit(f"ralex-egress: squid exited with {squid.returncode} (its log is above)") from None
            await asyncio.sleep(0.1)
    SOCKET.unlink(missing_ok=True)
    relay = await asyncio.create_subprocess_exec(
        "socat", f"UNIX-LISTEN:{SOCKET},fork,max-children=256,mode=0666,unlink-early",
        f"TCP:127.0.0.1:{SQUID_PORT},nodelay")
    say(f"network packages: {len(state.lists.allowed)} hosts allowed, {len(state.lists.denied)} denied; "
        f"blocked addresses: {' '.join(blocked)}")

    async def watch() -> None:
        while True:
            await asyncio.sleep(1)
            if state.read_lists():
                squid.send_signal(signal.SIGHUP)
                state.reloads += 1
                say(f"lists changed: {len(state.lists.allowed)} hosts allowed, "
                    f"{len(state.lists.denied)} denied (reloaded)")

    watcher = asyncio.create_task(watch())
    done = await asyncio.wait([asyncio.create_task(squid.wait()), asyncio.create_task(relay.wait())],
                              return_when=asyncio.FIRST_COMPLETED)
    watcher.cancel()
    for proc in (squid, relay):
        if proc.returncode is None:
            proc.terminate()
    raise SystemExit(f"ralex-egress: {'squid' if squid.returncode is not None else 'the relay'} stopped "
                     f"({len(done[0])} exited); the container restarts")


async def main() -> None:
    try:
        mode = egress.check_mode(os.environ.get("RALEX_AGENT_NETWORK", "") or egress.DEFAULT_MODE)
    except egress.HostError as err:
        raise SystemExit(f"ralex-egress: {err}") from None
    RUN.mkdir(parents=True, exist_ok=True)
    SOCKET.unlink(missing_ok=True)  # a previous container's: the health check waits for this one's
    state = State(mode)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    work = asyncio.create_task(serve_offline(state) if mode == "none" else run_proxy(state))
    metrics = asyncio.create_task(serve_metrics(state))
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([work, metrics, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in (work, metrics):
        task.cancel()
    for task in done:
        if task is not stopped and task.exception():
            raise task.exception()  # type: ignore[misc]


if __name__ == "__main__":
    asyncio.run(main())
