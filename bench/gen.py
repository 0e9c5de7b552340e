#!/usr/bin/env python3
"""Inputs for bench/load.sh and bench/memory.sh (standard library only).

  gen.py catalog --namespaces ns --per-namespace 1000 --out FILE
      a JSON `List` of Services: PER-NAMESPACE Services in each listed namespace (comma
      separated; `ns-{i}` with --namespace-count), plus `kubernetes` in `default`.
      Every Service has a cluster IP and two named TCP ports (http 80, metrics 9090), the
      same shape as benches/admission.rs, so each gives 13 variables.
  gen.py review --namespace ns [--services a,b,c] --out FILE
      an admission.k8s.io/v1 AdmissionReview of the "typical Pod" of benches/admission.rs:
      3 containers with 3 env vars each; with --services, the envlink.io/services annotation.
"""
import argparse
import ipaddress
import json
import sys

BASE_IP = int(ipaddress.IPv4Address("10.96.0.10"))


def service(ns, i, serial, with_ip=True):
    spec = {
        "type": "ClusterIP",
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
        ],
        "selector": {"app": f"svc-{i:05d}"},
    }
    if with_ip:
        spec["clusterIP"] = str(ipaddress.IPv4Address(BASE_IP + serial))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:05d}", "namespace": ns},
        "spec": spec,
    }


def kubernetes_service():
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.0.1",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
        },
    }


def namespaces(args):
    if args.namespace_count:
        return [f"{args.namespaces}-{k:03d}" for k in range(args.namespace_count)]
    return args.namespaces.split(",")


def cmd_catalog(args):
    items = [kubernetes_service()]
    serial = 0
    for ns in namespaces(args):
        for i in range(args.per_namespace):
            items.append(service(ns, i, serial))
            serial += 1
    with open(args.out, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f, separators=(",", ":"))


def container(name):
    return {
        "name": name,
        "image": "registry.example/app:1.2.3",
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "UPSTREAM", "value": "$(SVC_00001_SERVICE_HOST):80"},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }


def cmd_review(args):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-7d4b9c-x2x9z", "namespace": args.namespace, "labels": {"app": "web"}},
        "spec": {"containers": [container("app"), container("proxy"), container("log")],
                 "enableServiceLinks": True},
    }
    if args.services:
        pod["metadata"]["annotations"] = {"envlink.io/services": args.services}
    # The same shape as tests/support/review.rs (`PodReview`), which the Rust tests, benches and
    # fuzz targets build their reviews with: keep the two in step.
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": args.namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    with open(args.out, "w") as f:
        json.dump(review, f, separators=(",", ":"))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("catalog")
    c.add_argument("--namespaces", default="ns")
    c.add_argument("--namespace-count", type=int, default=0,
                   help="namespaces NAMESPACES-000 .. NAMESPACES-(N-1) instead of a list")
    c.add_argument("--per-namespace", type=int, required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("review")
    r.add_argument("--namespace", default="ns")
    r.add_argument("--services", default="")
    r.add_argument("--out", required=True)
    a = p.parse_args()
    {"catalog": cmd_catalog, "review": cmd_review}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
