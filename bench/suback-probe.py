#!/usr/bin/env python3
# PROTOCOL.md 3.6, the evidence: does a subscription made without waiting for its
# SUBACK catch a message that another client publishes only in answer to a
# publish the subscriber sent right after the SUBSCRIBE, on the same connection,
# in the same write? Plain MQTT 3.1.1 over a socket, no dependencies.
#
#   python3 bench/suback-probe.py PORT ROUNDS QOS [pipelined|wait]
#
# "pipelined" sends SUBSCRIBE and PUBLISH in one write (what mqft does); "wait"
# waits for the SUBACK first. Each round uses a fresh topic and subscription on
# one session, and counts an answer missing after 2 s.
import socket, struct, sys, time, select

def enc_len(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out

def s(x): x = x.encode(); return struct.pack(">H", len(x)) + x

def pkt(t, body): return bytes([t]) + enc_len(len(body)) + body

def connect(port, cid):
    c = socket.create_connection(("127.0.0.1", port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(pkt(0x10, s("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s(cid)))
    r = Reader(c); t, b = r.next(10)
    assert t >> 4 == 2 and b[1] == 0, (t, b)
    return c, r

class Reader:
    def __init__(self, c): self.c, self.buf = c, b""
    def next(self, timeout):
        end = time.time() + timeout
        while True:
            p = self.parse()
            if p: return p
            left = end - time.time()
            if left <= 0: return None
            r, _, _ = select.select([self.c], [], [], left)
            if r:
                d = self.c.recv(65536)
                if not d: raise EOFError
                self.buf += d
    def parse(self):
        if len(self.buf) < 2: return None
        n, m, i = 0, 1, 1
        while True:
            if i >= len(self.buf): return None
            b = self.buf[i]; n += (b & 127) * m; m *= 128; i += 1
            if not b & 128: break
        if len(self.buf) < i + n: return None
        t, body = self.buf[0], self.buf[i:i+n]; self.buf = self.buf[i+n:]
        return t, body

def publish(topic, payload, qos=0, pid=1, retain=False):
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return pkt(0x30 | (qos << 1) | (1 if retain else 0), body)

def subscribe(pid, flt, qos=1): return pkt(0x82, struct.pack(">H", pid) + s(flt) + bytes([qos]))

def topic_of(body):
    (l,) = struct.unpack(">H", body[:2]); return body[2:2+l].decode()

def main(port, rounds, qos):
    a, ra = connect(port, "probe-a")
    b, rb = connect(port, "probe-b")
    b.sendall(subscribe(1, "probe/+/go", 1))
    while True:
        t, _ = rb.next(10); 
        if t >> 4 == 9: break
    misses = 0; pid = 10
    for i in range(rounds):
        pid += 2
        # A: SUBSCRIBE data, then at once PUBLISH go, in one write.
        sub = subscribe(pid, f"probe/{i}/data/+", 1); go = publish(f"probe/{i}/go", b"x", qos, pid + 1)
        if MODE == "wait":
            a.sendall(sub)
            while True:
                p = ra.next(10); assert p, "no suback"
                if p[0] >> 4 == 9: break
            a.sendall(go)
        else:
            a.sendall(sub + go)
        # B: reacts to go by publishing data.
        while True:
            p = rb.next(10); assert p, "b got no go"
            t, body = p
            if t >> 4 == 3:
                if (t >> 1) & 3: b.sendall(pkt(0x40, body[2 + len(topic_of(body)):4 + len(topic_of(body))]))
                b.sendall(publish(f"probe/{i}/data/0", b"d", qos, 7)); break
        got = False; end = time.time() + 2
        while time.time() < end:
            p = ra.next(end - time.time())
            if not p: break
            t, body = p
            if t >> 4 == 3:
                if (t >> 1) & 3: a.sendall(pkt(0x40, body[2 + len(topic_of(body)):4 + len(topic_of(body))]))
                if topic_of(body) == f"probe/{i}/data/0": got = True; break
        if not got:
            misses += 1
            if misses == 1: print("first miss at round", i)
    print(f"port {port} qos {qos} {MODE}: {rounds} rounds, {misses} misses")

MODE = sys.argv[4] if len(sys.argv) > 4 else "pipelined"
main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
