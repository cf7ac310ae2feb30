"""The names and addresses a stack answers to: its TLS certificates name them, and MLflow's Host check allows them."""

from __future__ import annotations

import socket

import psutil

from stack.parts import LOOPBACK, Settings


def machine_addresses() -> list[str]:
    """Every IPv4 and IPv6 address of this machine's interfaces, loopback included, without an IPv6 zone."""
    found = [a for addrs in psutil.net_if_addrs().values() for a in addrs]
    return [a.address.split("%")[0] for a in found if a.family in (socket.AF_INET, socket.AF_INET6)]


def served_names(settings: Settings) -> list[str]:
    """The names and addresses clients may reach the stack by: loopback, and when it listens on every interface,
    each of this machine's addresses and names; the advertised name."""
    names = ["localhost", "127.0.0.1", "::1"]
    if settings.host in ("0.0.0.0", "::"):
        names += [*machine_addresses(), socket.gethostname(), socket.getfqdn()]
    elif settings.host not in LOOPBACK:
        names.append(settings.host)
    names += [settings.advertise] if settings.advertise else []
    return list(dict.fromkeys(names))


def mlflow_allowed_hosts(names: list[str]) -> list[str]:
    """The Host headers MLflow answers (any other gets 403, its guard against DNS rebinding): each name, with any
    port. MLflow's default allows private ranges only, so a teammate's request to any other address of the machine
    was refused."""
    hosts = []
    for name in names:
        if ":" in name:  # IPv6: in brackets, the first one escaped for MLflow's fnmatch
            hosts += [f"[{name}]", f"[[]{name}]:*"]
        else:
            hosts += [name, f"{name}:*"]
    return hosts


def in_url(host: str) -> str:
    """How a URL on this machine reaches a server that listens on `host`."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
