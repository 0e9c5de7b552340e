#!/usr/bin/env python3
"""Creates many Services in a (test) API server fast (standard library only; used by
bench/memory.sh inside the testbed's network namespace).

--method api (default): several processes, each with a few keep-alive HTTPS connections,
POSTing one Service per request with a bearer token. On the 2-core benchmark machine this
runs at about 100-200 Services/s: every create also rewrites the cluster-IP allocation bitmap
in etcd (serialised), so 100,000 take 10-15 minutes.

--method etcd --etcd http://127.0.0.1:PORT: creates one Service through the API (so it has
everything the API server adds: uid, creationTimestamp, managedFields, clusterIPs) and
writes the others as copies of it (new name, namespace, uid, cluster IP) straight into the
testbed's etcd, one put (one revision) each, over --threads keep-alive connections to etcd's
JSON gateway, at up to --rate per second. The API server reads them
back like its own objects (its storage decoder accepts JSON) and its watch cache sends
them to watchers as ADDED events, so envlink receives exactly what a real API server sends;
only the cluster-IP bitmap does not know these IPs (the repair loop may log about them).

  create_services.py --url https://127.0.0.1:PORT --token TOKEN --ca CA.crt \\
      --namespace-prefix ns --namespaces 100 --per-namespace 1000 [--first 0] [--workers 8]

Namespaces PREFIX-000 .. are created when missing. Services are named svc-00000 ..; the
indexes [--first, --per-namespace) are created in every namespace (so a second call with
--first continues where the first stopped). Each Service has two named TCP ports (http 80,
metrics 9090) like bench/gen.py's; the API server allocates the cluster IP.
"""
import argparse
import base64
import copy
import http.client
import ipaddress
import json
import multiprocessing
import queue
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid


def connection(args):
    u = urllib.parse.urlparse(args.url)
    ctx = ssl.create_default_context(cafile=args.ca)
    return http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)


def post(conn, path, body, token):
    data = json.dumps(body, separators=(",", ":")).encode()
    for attempt in range(20):
        try:
            conn.request("POST", path, body=data, headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            })
            resp = conn.getresponse()
            text = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            time.sleep(0.2 * (attempt + 1))
            continue
        if resp.status in (200, 201, 409):  # 409: exists already (a retry that did land)
            return resp.status
        if resp.status in (429, 500, 503, 504):
            time.sleep(0.2 * (attempt + 1))
            continue
        raise RuntimeError(f"POST {path}: {resp.status} {text[:300]!r}")
    raise RuntimeError(f"POST {path}: gave up after retries")


def service(i):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:05d}", "labels": {"app": f"svc-{i:05d}"}},
        "spec": {
            "type": "ClusterIP",
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP"},
            ],
            "selector": {"app": f"svc-{i:05d}"},
        },
    }


def worker(args, jobs, counter):
    """One process: THREADS connections taking (namespace, index) jobs from the queue."""
    def run():
        conn = connection(args)
        while True:
            job = jobs.get()
            if job is None:
                return
            ns, i = job
            post(conn, f"/api/v1/namespaces/{ns}/services", service(i), args.token)
            with counter.get_lock():
                counter.value += 1

    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def get(conn, path, token):
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {text[:300]!r}")
    return json.loads(text)


def via_etcd(args, names):
    """Template through the API, the rest straight into etcd."""
    conn = connection(args)
    tmpl_ns, tmpl_i = names[0], args.first
    post(conn, f"/api/v1/namespaces/{tmpl_ns}/services", service(tmpl_i), args.token)
    template = get(conn, f"/api/v1/namespaces/{tmpl_ns}/services/svc-{tmpl_i:05d}", args.token)
    conn.close()
    for key in ("resourceVersion", "selfLink"):
        template["metadata"].pop(key, None)
    template.setdefault("apiVersion", "v1")
    template.setdefault("kind", "Service")
    base = int(ipaddress.IPv4Address("10.96.16.0"))
    etcd = urllib.parse.urlparse(args.etcd)
    # One put per etcd transaction, so every Service gets its own revision (its
    # resourceVersion), as every write through the API server does. Several objects in one
    # transaction would share a resourceVersion, and a watch resumed from that version after
    # the API server force-closed it mid-transaction would never see the rest: that is not
    # something a real cluster does, and it once looked like a lost-event bug in envlink.
    puts = queue.Queue(maxsize=1000)
    failures = []
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def putter():
        conn = http.client.HTTPConnection(etcd.hostname, etcd.port, timeout=60)
        while True:
            item = puts.get()
            if item is None:
                return
            key, value = item
            body = json.dumps({"key": base64.b64encode(key).decode(),
                               "value": base64.b64encode(value).decode()})
            try:
                conn.request("POST", "/v3/kv/put", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"etcd put: {resp.status} {answer[:300]!r}")
            except Exception as e:  # noqa: BLE001 - reported once, after the others stop
                failures.append(e)
                return
            with lock:
                done[0] += 1
                total = done[0]
            # pace: --rate Services per second overall
            ahead = total / args.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    threads = [threading.Thread(target=putter, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for i in range(args.first, args.per_namespace):
        for k, ns in enumerate(names):
            if (ns, i) == (tmpl_ns, tmpl_i):
                continue
            if failures:
                break
            obj = copy.deepcopy(template)
            name = f"svc-{i:05d}"
            obj["metadata"].update(name=name, namespace=ns, uid=str(uuid.uuid4()),
                                   labels={"app": name})
            ip = str(ipaddress.IPv4Address(base + i * len(names) + k))
            obj["spec"]["clusterIP"] = ip
            if "clusterIPs" in obj["spec"]:
                obj["spec"]["clusterIPs"] = [ip]
            obj["spec"]["selector"] = {"app": name}
            key = f"/registry/services/specs/{ns}/{name}".encode()
            puts.put((key, json.dumps(obj, separators=(",", ":")).encode()))
    for _ in threads:
        puts.put(None)
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"writing to etcd failed: {failures[0]}")
    elapsed = time.monotonic() - started
    print(f"[create] {done[0] + 1} Services in {elapsed:.1f} s (1 through the API, the rest "
          f"through etcd, one revision each)", file=sys.stderr, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--namespace-prefix", default="ns")
    p.add_argument("--namespaces", type=int, required=True)
    p.add_argument("--per-namespace", type=int, required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--workers", type=int, default=4, help="processes")
    p.add_argument("--threads", type=int, default=4, help="connections per process")
    p.add_argument("--method", choices=["api", "etcd"], default="api")
    p.add_argument("--etcd", help="with --method etcd: the testbed's etcd client URL")
    p.add_argument("--rate", type=float, default=5000.0,
                   help="with --method etcd: at most this many Services per second (default 5000)")
    args = p.parse_args()

    names = [f"{args.namespace_prefix}-{k:03d}" for k in range(args.namespaces)]
    conn = connection(args)
    for ns in names:
        post(conn, "/api/v1/namespaces",
             {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, args.token)
    conn.close()
    if args.method == "etcd":
        if not args.etcd:
            sys.exit("--method etcd needs --etcd URL")
        via_etcd(args, names)
        return

    jobs = multiprocessing.Queue(maxsize=10000)
    counter = multiprocessing.Value("l", 0)
    procs = [multiprocessing.Process(target=worker, args=(args, jobs, counter))
             for _ in range(args.workers)]
    for proc in procs:
        proc.start()
    total = len(names) * max(0, args.per_namespace - args.first)
    started = time.monotonic()
    last = started
    # interleave namespaces so every namespace grows at once, like a real cluster
    for i in range(args.first, args.per_namespace):
        for ns in names:
            jobs.put((ns, i))
            now = time.monotonic()
            if now - last > 10:
                last = now
                done = counter.value
                print(f"[create] {done}/{total} Services, {done / (now - started):.0f}/s",
                      file=sys.stderr, flush=True)
    for _ in range(args.workers * args.threads):
        jobs.put(None)
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            sys.exit(f"a worker failed (exit {proc.exitcode})")
    elapsed = time.monotonic() - started
    print(f"[create] {counter.value} Services in {elapsed:.1f} s "
          f"({counter.value / max(elapsed, 1e-9):.0f}/s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
