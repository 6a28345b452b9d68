#!/usr/bin/env python3
"""Flood and slowloris against a running whatstat: CLIENTS clients post 100-event batches
as fast as they are answered, STALLED connections send half a request and then nothing,
while /health is timed. Prints /health latency percentiles, answers by status, and the
server's peak RSS (VmHWM of --pid).

    scripts/flood.py --base http://127.0.0.1:8080 --key ORG_KEY --pid PID [--secs 20]
"""
import argparse, asyncio, json, time, random

async def request(host, port, raw):
    r, w = await asyncio.open_connection(host, port)
    w.write(raw)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)
    w.close()
    return status

def post(host, port, key, body):
    return (f"POST /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

async def flooder(i, host, port, key, until, statuses):
    n = 0
    while time.time() < until:
        t = int(time.time()) - 30
        events = [{"type": "message", "account_id": f"flood-{i % 4}", "timestamp": t, "id": f"f{i}-{n}-{k}",
                   "direction": "inbound", "message_type": "text"} for k in range(100)]
        n += 1
        try:
            s = await request(host, port, post(host, port, key, json.dumps(events).encode()))
        except Exception as e:
            s = type(e).__name__
        statuses[s] = statuses.get(s, 0) + 1

async def stall(host, port, held):
    try:
        r, w = await asyncio.open_connection(host, port)
        w.write(f"POST /api/events HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n".encode())
        await w.drain()
        held.append(w)
        await r.read()  # returns when the server closes it
        held.remove(w)
    except Exception:
        pass

async def main():
    a = argparse.ArgumentParser()
    a.add_argument("--base", required=True); a.add_argument("--key", required=True)
    a.add_argument("--pid", type=int); a.add_argument("--secs", type=float, default=20)
    a.add_argument("--clients", type=int, default=48); a.add_argument("--stalled", type=int, default=400)
    o = a.parse_args()
    host, port = o.base.split("//")[1].split(":"); port = int(port)
    until = time.time() + o.secs
    statuses, held = {}, []
    stalls = [asyncio.create_task(stall(host, port, held)) for _ in range(o.stalled)]
    await asyncio.sleep(1)
    floods = [asyncio.create_task(flooder(i, host, port, o.key, until, statuses)) for i in range(o.clients)]
    lat = []
    while time.time() < until:
        t0 = time.perf_counter()
        s = await request(host, port, f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        lat.append((time.perf_counter() - t0) * 1000)
        assert s == 200, s
        await asyncio.sleep(0.1)
    await asyncio.gather(*floods)
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"/health: {len(lat)} probes, p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {lat[-1]:.1f} ms")
    print(f"flood answers: {statuses}; stalled connections still open: {len(held)} of {o.stalled}")
    if o.pid:
        for line in open(f"/proc/{o.pid}/status"):
            if line.startswith(("VmHWM", "VmRSS")):
                print(line.strip())
    for t in stalls:
        t.cancel()

asyncio.run(main())
