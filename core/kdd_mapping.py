"""KDD Cup 99's basic-feature vocabulary from a Zeek connection: the flag from ``conn_state``, the service name from
Zeek's ``service`` and the ports (or the ICMP type), and the error classes the traffic features count.

KDD's flags are Bro's own connection states of 1998 (its data shows SF, S0, REJ, RSTO, RSTR, RSTOS0, S1, S2, S3,
SH and OTH); today's Zeek keeps most of them and adds a few, mapped here to the nearest KDD state. KDD's
services are names for well-known ports (``http``, ``smtp``, ``ftp_data``, ``domain_u`` for DNS over UDP,
``ecr_i``/``eco_i`` for ICMP echo reply/request, ``private`` for ports KDD left unnamed). Zeek's ``service``
(from protocol analysis, so a web server on port 8080 is still ``http``) is used first, then the responder
port, then ``private`` for a port at or above 1024 and ``other`` below. Every table is in the README.
"""

from __future__ import annotations

FLAG = {  # Zeek conn_state -> KDD flag
    "S0": "S0", "S1": "S1", "SF": "SF", "REJ": "REJ", "S2": "S2", "S3": "S3", "RSTO": "RSTO", "RSTR": "RSTR",
    "RSTOS0": "RSTOS0", "RSTRH": "RSTR", "SH": "SH", "SHR": "SH", "OTH": "OTH",
}
SYN_ERRORS = frozenset({"S0", "S1", "S2", "S3"})  # KDD's serror: a SYN without a completed, normal close
REJ_ERRORS = frozenset({"REJ"})  # KDD's rerror: rejected connection attempts

ZEEK_SERVICE = {  # Zeek's analyzer names -> KDD services (the first listed of a comma-separated set wins)
    "http": "http", "ssl": "http_443", "ftp": "ftp", "ftp-data": "ftp_data", "smtp": "smtp", "ssh": "ssh",
    "telnet": "telnet", "pop3": "pop_3", "imap": "imap4", "irc": "IRC", "finger": "finger", "ntp": "ntp_u",
    "ldap": "ldap", "whois": "whois", "gopher": "gopher", "nntp": "nntp", "tftp": "tftp_u", "sunrpc": "sunrpc",
    "bgp": "bgp", "x11": "X11", "krb": "klogin", "krb_tcp": "klogin", "rlogin": "login", "rsh": "shell",
}
PORT_SERVICE = {  # responder port -> KDD service (TCP and UDP unless noted in the DNS special case)
    7: "echo", 9: "discard", 11: "systat", 13: "daytime", 15: "netstat", 20: "ftp_data", 21: "ftp", 22: "ssh",
    23: "telnet", 25: "smtp", 37: "time", 42: "name", 43: "whois", 57: "mtp", 69: "tftp_u", 70: "gopher",
    79: "finger", 80: "http", 95: "supdup", 101: "hostnames", 102: "iso_tsap", 105: "csnet_ns", 109: "pop_2",
    110: "pop_3", 111: "sunrpc", 113: "auth", 117: "uucp_path", 119: "nntp", 123: "ntp_u", 137: "netbios_ns",
    138: "netbios_dgm", 139: "netbios_ssn", 143: "imap4", 150: "sql_net", 179: "bgp", 194: "IRC", 210: "Z39_50",
    389: "ldap", 443: "http_443", 512: "exec", 513: "login", 514: "shell", 515: "printer", 520: "efs",
    530: "courier", 540: "uucp", 543: "klogin", 544: "kshell", 5999: "vmnet", 6667: "IRC",
    **{p: "X11" for p in range(6000, 6064)},
}
ICMP_SERVICE = {0: "ecr_i", 8: "eco_i", 3: "urp_i", 5: "red_i", 13: "tim_i", 14: "tim_i", 11: "urh_i"}


def flag(conn_state: str | None) -> str:
    return FLAG.get(conn_state or "", "OTH")


def service(proto: str, zeek_service: str | None, orig_p: int, resp_p: int) -> str:
    """KDD's service name. For ICMP Zeek puts the message type in the originator port."""
    if proto == "icmp":
        return ICMP_SERVICE.get(orig_p, "oth_i")
    if zeek_service:
        first = zeek_service.split(",")[0].strip().lower()
        if first == "dns":
            return "domain_u" if proto == "udp" else "domain"
        if first in ZEEK_SERVICE:
            return ZEEK_SERVICE[first]
    if resp_p == 53:
        return "domain_u" if proto == "udp" else "domain"
    if resp_p in PORT_SERVICE:
        return PORT_SERVICE[resp_p]
    return "private" if resp_p >= 1024 else "other"
