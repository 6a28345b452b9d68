# A profiling stream: N events, 10 accounts, 29 days, 40 % outbound messages (+1-3 statuses), the rest inbound;
# every message id unique. Usage: bench-stream.py N time|random OUTDIR [rich]
import json, random, sys, os, time
n = int(sys.argv[1]); order = sys.argv[2]; out = sys.argv[3]; rich = len(sys.argv) > 4
rnd = random.Random(17)
now = int(time.time()) - 600
start = now - 29 * 86400
events = []
i = 0
while len(events) < n:
    acct = f"acct-{rnd.randrange(10)}"
    t = rnd.randrange(start, now - 400)
    i += 1
    if rnd.random() < 0.6 / (0.6 + 0.4 * 0.5):
        mid = f"wamid.out{i}"
        m = {"type": "message", "account_id": acct, "timestamp": t, "id": mid, "direction": "outbound", "message_type": rnd.choice(["text", "template", "image"]), "contact_id": f"c{rnd.randrange(50000)}"}
        cat = rnd.choice(["marketing", "utility", "authentication"])
        if rich:
            m["recipient"] = rnd.choice(["91", "49", "1", "55", "44", "62", "234", "52"]) + str(rnd.randrange(10**9, 10**10))
            m["template_name"] = f"tpl_{cat}_{rnd.randrange(6)}"; m["template_language"] = rnd.choice(["en", "hi"]); m["template_category"] = cat
            if cat == "marketing":
                m["campaign_id"] = f"{acct}-campaign-{(t // 604800)}"
        events.append((t, m))
        k = rnd.randint(1, 3)
        for j, st in enumerate(["sent", "delivered", "read"][:k]):
            s = {"type": "message_status", "account_id": acct, "timestamp": t + 1 + j * 30, "message_id": mid, "status": st}
            if rich and st == "sent":
                s["pricing_category"] = cat; s["pricing_type"] = "regular"
            events.append((t + 1 + j * 30, s))
    else:
        events.append((t, {"type": "message", "account_id": acct, "timestamp": t, "id": f"wamid.in{i}", "direction": "inbound", "message_type": "text", "contact_id": f"c{rnd.randrange(50000)}"}))
events = events[:n]
if order == "time":
    events.sort(key=lambda e: e[0])
else:
    rnd.shuffle(events)
os.makedirs(out, exist_ok=True)
for b in range(0, len(events), 5000):
    with open(f"{out}/{b // 5000:05d}.ndjson", "w") as f:
        for _, e in events[b:b + 5000]:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
out_n = sum(1 for e in events if e[1]["type"] == "message")
print(len(events), "events", out_n, "messages")
