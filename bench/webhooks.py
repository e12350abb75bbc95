"""The pieces of bench/webhooks.sh: a receiver, a producer of events, and the report.

  python3 bench/webhooks.py receive PORT LOG       # answers 204, logs "<arrival> <webhook-id> <key_id>"
  python3 bench/webhooks.py produce API ADMIN TENANTS SENDERS SECONDS ACKS
                                                     # creates API keys (key.created events) and
                                                     # logs "<ack time> <key_id>" as each is answered
  python3 bench/webhooks.py direct URL SENDERS SECONDS   # the receiver alone: posts/s it takes
  python3 bench/webhooks.py report ACKS LOG SINCE  # delivered/s and commit-to-delivery p50/p99
"""
import http.client
import http.server
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def receive(port, log):
    out = open(log, "a", buffering=1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            now = time.time()
            try:
                key_id = json.loads(body)["data"]["data"].get("key_id", "-")
            except (ValueError, KeyError, TypeError, AttributeError):
                key_id = "-"
            with lock:
                out.write(f"{now:.6f} {self.headers.get('webhook-id')} {key_id}\n")
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


def run_senders(senders, seconds, send):
    """Runs `send(i, conn_factory)` in `senders` threads until `seconds` pass; total calls."""
    stop = time.time() + seconds
    counts = [0] * senders

    def loop(i):
        while time.time() < stop:
            send(i)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def produce(api, admin, tenants, senders, seconds, acks):
    u = urlsplit(api)
    conns = [http.client.HTTPConnection(u.hostname, u.port) for _ in range(int(senders))]
    out = open(acks, "w", buffering=1)
    lock = threading.Lock()
    tenants = int(tenants)
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    n = [0]

    def send(i):
        with lock:
            n[0] += 1
            k = n[0]
        conns[i].request("POST", f"/v1/tenants/t{k % tenants}/keys", json.dumps({"name": f"k{k}"}), headers)
        r = conns[i].getresponse()
        body = r.read()
        now = time.time()
        if r.status != 201:
            sys.exit(f"creating a key answered {r.status}: {body[:200]!r}")
        with lock:
            out.write(f"{now:.6f} {json.loads(body)['id']}\n")

    total = run_senders(int(senders), float(seconds), send)
    print(f"{total / float(seconds):.0f}")


def direct(url, senders, seconds):
    u = urlsplit(url)
    conns = [http.client.HTTPConnection(u.hostname, u.port) for _ in range(int(senders))]
    body = json.dumps({"type": "key.created", "timestamp": "x", "data": {"data": {"key_id": "direct"}}})

    def send(i):
        conns[i].request("POST", u.path, body, {"Content-Type": "application/json", "webhook-id": "direct"})
        conns[i].getresponse().read()

    total = run_senders(int(senders), float(seconds), send)
    print(f"{total / float(seconds):.0f}")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def report(acks, log, since):
    acked = {}
    for line in open(acks):
        t, key = line.split()
        acked[key] = float(t)
    first = {}
    for line in open(log):
        t, _, key = line.split()
        if float(t) >= float(since) and key in acked:
            first.setdefault(key, float(t))
    missing = len(acked) - len(first)
    lags = [first[k] - acked[k] for k in first]
    span = max(first.values()) - min(acked.values()) if first else 0
    print(
        f"{len(first)} {missing} {len(first) / span if span else 0:.0f} "
        f"{percentile(lags, 50) * 1000:.1f} {percentile(lags, 99) * 1000:.1f}"
    )


if __name__ == "__main__":
    {"receive": receive, "produce": produce, "direct": direct, "report": report}[sys.argv[1]](*sys.argv[2:])
