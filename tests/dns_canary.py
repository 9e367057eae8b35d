"""A resolver and TCP canary for the egress tests (tests/compose.fake.yaml runs it beside the egress proxy).

- DNS on UDP 53: every question is logged (one line: the name) to /tmp/dns-queries.log. Names given
  with ``--answer NAME=IP`` (``self`` = this container's address) are answered from that table; any
  other A question is answered from this container's own resolver (so real package hosts still
  resolve), else NXDOMAIN. AAAA questions get no records.
- TCP on 80 and 443: every connection is logged (the peer) to /tmp/tcp-connections.log and closed.

The tests read both logs: a name the proxy refuses must never be asked, and no connection may reach
an address the proxy refuses.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading

QUERIES = "/tmp/dns-queries.log"
CONNECTIONS = "/tmp/tcp-connections.log"
lock = threading.Lock()


def log(path: str, line: str) -> None:
    with lock, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def question(packet: bytes) -> tuple[str, int, int]:
    """(name, qtype, end offset of the question)."""
    labels, at = [], 12
    while packet[at]:
        size = packet[at]
        labels.append(packet[at + 1:at + 1 + size].decode("ascii", "replace"))
        at += 1 + size
    qtype = struct.unpack("!H", packet[at + 1:at + 3])[0]
    return ".".join(labels).lower(), qtype, at + 5


def answer(packet: bytes, table: dict[str, str]) -> bytes:
    name, qtype, end = question(packet)
    log(QUERIES, name)
    addresses: list[str] = []
    rcode = 0
    if name in table:
        addresses = [table[name]] if qtype == 1 else []
    elif qtype == 1:
        try:
            addresses = sorted({info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)})
        except OSError:
            rcode = 3
    header = packet[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, len(addresses), 0, 0)
    records = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses)
    return header + packet[12:end] + records


def serve_dns(table: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 53))
    while True:
        packet, peer = sock.recvfrom(4096)
        try:
            sock.sendto(answer(packet, table), peer)
        except (IndexError, struct.error, UnicodeError):
            continue


def serve_tcp(port: int) -> None:
    server = socket.create_server(("0.0.0.0", port), reuse_port=True)
    while True:
        conn, peer = server.accept()
        log(CONNECTIONS, f"{peer[0]} {port}")
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answer", action="append", default=[], help="NAME=IP (self: this container)")
    args = parser.parse_args()
    me = socket.gethostbyname(socket.gethostname())
    table = {}
    for item in args.answer:
        name, ip = item.split("=", 1)
        table[name.lower()] = me if ip == "self" else ip
    for path in (QUERIES, CONNECTIONS):
        open(path, "w").close()
    for port in (80, 443):
        threading.Thread(target=serve_tcp, args=(port,), daemon=True).start()
    print(f"dns-canary on {me}: {table}", flush=True)
    serve_dns(table)


if __name__ == "__main__":
    main()
