#!/usr/bin/env python3
"""Writes the seed corpora: one small, valid input per feature of each
target, so the fuzzer starts from inputs that reach deep code."""
import json, os, struct

here = os.path.dirname(os.path.abspath(__file__))

def write(target, name, data):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def mac(*b): return bytes(b)
A = mac(2, 0x42, 172, 17, 0, 2); B = mac(2, 0x42, 172, 17, 0, 3)
GW = mac(2, 0x42, 0x5e, 0, 0, 1); BC = b"\xff" * 6
IPA = bytes([172, 17, 0, 2]); IPB = bytes([172, 17, 0, 3]); IPGW = bytes([172, 17, 0, 1])

def eth(dst, src, et, payload): return dst + src + struct.pack("!H", et) + payload
def ipv4(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload
def icmp_echo():
    m = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]
def arp(op, sha, spa, tha, tpa):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa
def udp(sp, dp, data): return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data
def tcp(payload):
    return struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x18, 65535, 0, 0) + payload
def rec(port, frame, vnet=b"\0" * 10):
    return bytes([port]) + vnet + struct.pack("<H", len(frame)) + frame

arp_gw = eth(BC, A, 0x0806, arp(1, A, IPA, b"\0" * 6, IPGW))
ping_gw = eth(GW, A, 0x0800, ipv4(IPA, IPGW, 1, icmp_echo()))
uni = eth(B, A, 0x0800, ipv4(IPA, IPB, 17, udp(1000, 2000, b"x" * 32)))
unknown = eth(mac(2, 0, 0, 0, 0, 9), A, 0x0800, ipv4(IPA, IPB, 17, udp(1, 2, b"")))
ra = eth(mac(0x33, 0x33, 0, 0, 0, 1), A, 0x86dd,
         struct.pack("!IHBB16s16s", 0x60000000, 16, 58, 255, b"\xfe\x80" + b"\0" * 13 + b"\x02",
                     b"\xff\x02" + b"\0" * 13 + b"\x01") + bytes([134, 0, 0, 0, 64, 0, 0x07, 0x08]) + b"\0" * 8)
stp = eth(mac(1, 0x80, 0xc2, 0, 0, 0), A, 0x0026, b"\x42\x42\x03" + b"\0" * 40)
big = eth(B, A, 0x0800, ipv4(IPA, IPB, 6, tcp(b"y" * 3000)))
gso = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)
write("switch_process", "arp-gateway", rec(1, arp_gw))
write("switch_process", "ping-gateway", rec(1, ping_gw))
write("switch_process", "learn-then-unicast", rec(2, eth(BC, B, 0x0806, arp(1, B, IPB, b"\0" * 6, IPA))) + rec(1, uni))
write("switch_process", "unknown-unicast", rec(1, unknown) + rec(3, unknown))
write("switch_process", "ipv6-ra", rec(1, ra))
write("switch_process", "link-local-control", rec(1, stp))
write("switch_process", "gso-tcp", rec(1, big, gso))

def dns_query(name, qtype=1, txid=0x1234):
    q = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)
def drec(op, data): return bytes([op]) + struct.pack("<H", len(data)) + data
def answer(q):
    r = bytearray(q); r[2] = 0x81; r[3] = 0x80; r[7] = 1
    return bytes(r) + b"\xc0\x0c" + struct.pack("!HHIH4s", 1, 1, 60, 4, b"\x5d\xb8\xd8\x22")
ext = dns_query("example.com")
s1 = 1 << 5
write("dns_resolver", "local-a", drec(s1, dns_query("c2")))
write("dns_resolver", "local-aaaa-ptr", drec(s1, dns_query("c2", 28)) + drec(s1, dns_query("2.0.0.10.in-addr.arpa", 12)))
write("dns_resolver", "forward-relay", drec(s1, ext) + drec(s1 | 2, answer(ext)))
write("dns_resolver", "forward-servfail-next", drec(s1, ext) + drec(s1 | 2, ext[:2] + b"\x81\x82" + ext[4:]) + drec(s1 | 4, b""))
write("dns_resolver", "forward-timeout", drec(s1, ext) + drec(s1 | 5, b"\0" * 1200))
tcpq = struct.pack("!H", len(ext)) + ext
write("dns_resolver", "tcp-split", drec(s1 | 1, tcpq[:5]) + drec(s1 | 1, tcpq[5:]) + drec(s1 | 2, answer(ext)))

def api(*reqs): return b"\xff".join(m.encode() + b"\0" + u.encode() + b"\0" + body.encode() for m, u, body in reqs)
net = json.dumps({"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
                  "Options": {"com.docker.network.driver.mtu": "1400"}})
write("api_router", "list", api(("GET", "/v1/networks", "")))
write("api_router", "create-inspect-delete", api(("POST", "/v1/networks", net), ("GET", "/v1/networks/n1", ""), ("DELETE", "/v1/networks/n1", "")))
write("api_router", "sandbox-connect", api(("POST", "/v1/networks", net), ("POST", "/v1/sandboxes", json.dumps({"Name": "web"})),
                                           ("POST", "/v1/networks/n1/connect", json.dumps({"Container": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.9.0.7"}}})),
                                           ("GET", "/v1/ports", ""), ("GET", "/v1/fdb?network=n1", ""), ("GET", "/v1/dns", "")))
write("api_router", "bad", api(("PUT", "/v1/networks/%zz", "{"), ("GET", "/", "")))

write("ipam_json", "create-address-release", json.dumps([
    {"Create": {"global": False, "builtin": False, "configs": [{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25", "Gateway": "10.1.0.1", "AuxiliaryAddresses": {"a": "10.1.0.5"}}]}},
    {"Address": [0, None]}, {"Address": [0, "10.1.0.200"]}, {"Release": [0, "10.1.0.200"]}, {"Delete": 0}]).encode())
write("ipam_json", "auto-pools", json.dumps([
    {"Create": {"global": False, "builtin": True, "configs": []}},
    {"Create": {"global": True, "builtin": False, "configs": []}},
    {"Pool": {"global": False, "subnet": "192.168.0.0/16", "range": "192.168.1.0/24"}}, {"Address": [1, None]}]).encode())
write("ipam_json", "restore", json.dumps([{"Restore": {}}]).encode())
