#!/usr/bin/env python3
"""Offline validation of the deploy files (run by .ci/run).

- every YAML file under deploy/ parses;
- deploy/compose/compose.yaml against the compose-spec JSON schema vendored by check-jsonschema;
- deploy/kubernetes: the base and each overlay rendered with the small subset of Kustomize they
  use (resources, patches by target, namespace, labels; anything else is refused), then every
  object validated against the Kubernetes schemas bundled by kubernetes-validate (strict: an
  unknown field fails), and the KEDA ScaledObject against kubernetes/schemas/;
- cross-checks between the manifests and dramaq's configuration: grace periods longer than
  worker.shutdown_grace_ms, probes on /healthz and /readyz, and every secret the config names by
  environment variable provided by the worker Deployment (and nothing else asked of the Secret).

Needs: pip install kubernetes-validate check-jsonschema (PyYAML and jsonschema come with them).
"""

import copy
import json
import pathlib
import subprocess
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30.0"
SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "patches", "namespace", "labels"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch, builtin):
    """Strategic merge as Kustomize does it: maps deep-merge; for built-in kinds, lists of
    named maps (containers, env, ports) merge by name; other lists (and all lists of custom
    resources, which get a JSON merge patch) are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, builtin) if k in base else copy.deepcopy(v)
        return out
    named = lambda xs: isinstance(xs, list) and xs and all(isinstance(x, dict) and "name" in x for x in xs)
    if builtin and named(base) and named(patch):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            for i, b in enumerate(out):
                if b["name"] == p["name"]:
                    out[i] = merge(b, p, builtin)
                    break
            else:
                out.append(copy.deepcopy(p))
        return out
    return copy.deepcopy(patch)


def render(directory):
    kfile = directory / "kustomization.yaml"
    (k,) = load_all(kfile)
    for key in set(k) - SUPPORTED_KUSTOMIZE_KEYS:
        problem(kfile, f"uses `{key}`, which this check cannot render")
    objects = []
    for r in k.get("resources", []):
        path = directory / r
        objects += render(path) if path.is_dir() else load_all(path)
    for p in k.get("patches", []):
        target = p.get("target", {})
        (patch,) = load_all(directory / p["path"])
        hits = [o for o in objects
                if o["kind"] == target.get("kind") and o["metadata"]["name"] == target.get("name")]
        if len(hits) != 1:
            problem(kfile, f"patch {p['path']} matches {len(hits)} objects")
            continue
        i = objects.index(hits[0])
        builtin = "." not in objects[i]["apiVersion"].split("/")[0] or objects[i]["apiVersion"].startswith(("apps/", "policy/", "batch/"))
        objects[i] = merge(objects[i], patch, builtin)
    for entry in k.get("labels", []):
        for o in objects:
            o["metadata"].setdefault("labels", {}).update(entry.get("pairs", {}))
    if "namespace" in k:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objects


def check_objects(name, objects):
    keda = json.loads((K8S / "schemas" / "keda-scaledobject.json").read_text())
    by_kind = {}
    for o in objects:
        where = f"{name}: {o['kind']}/{o['metadata']['name']}"
        by_kind.setdefault(o["kind"], []).append(o)
        if o["apiVersion"].startswith("keda.sh/"):
            for e in jsonschema.Draft202012Validator(keda).iter_errors(o):
                problem(where, f"{e.json_path}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(where, f"{'.'.join(map(str, e.path))}: {e.message}")
    config = next(o for o in by_kind["ConfigMap"] if o["metadata"]["name"] == "dramaq-config")
    cfg = tomllib.loads(config["data"]["dramaq.toml"])
    grace_ms = cfg["worker"].get("shutdown_grace_ms", 20000)
    named_env = {"DRAMAQ_REDIS_URL"}
    for acct in cfg.get("accounts", {}).values():
        named_env |= {v for k, v in acct.items() if k.endswith("_env")}
    s3 = cfg.get("storage", {}).get("s3")
    if cfg.get("storage", {}).get("backend") == "s3" and s3:
        named_env |= {s3.get("access_key_env", "AWS_ACCESS_KEY_ID"),
                      s3.get("secret_key_env", "AWS_SECRET_ACCESS_KEY")}
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    worker = deployments["dramaq-worker"]
    spec = worker["spec"]["template"]["spec"]
    if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= grace_ms:
        problem(name, f"worker terminationGracePeriodSeconds is not longer than shutdown_grace_ms {grace_ms}")
    (c,) = spec["containers"]
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        problem(name, "worker liveness probe is not on /healthz")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        problem(name, "worker readiness probe is not on /readyz")
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
                   for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for var, key in from_secret.items():
        if var != key:
            problem(name, f"env {var} reads Secret key {key}: use the variable's own name")
    for var in sorted(named_env - set(from_secret)):
        problem(name, f"dramaq.toml names {var}, which the worker Deployment does not set")
    for var in sorted(set(from_secret) - named_env):
        problem(name, f"the worker Deployment reads {var} from the Secret, which dramaq.toml never names")
    for kind in ("PodDisruptionBudget", "Service", "ScaledObject"):
        if kind not in by_kind:
            problem(name, f"no {kind}")
    for so in by_kind.get("ScaledObject", []):
        if so["spec"]["scaleTargetRef"]["name"] not in deployments:
            problem(name, "the ScaledObject scales no Deployment of this set")
    scrape = next(o for o in by_kind["ConfigMap"] if o["metadata"]["name"] == "dramaq-prometheus-scrape")
    jobs = yaml.safe_load(scrape["data"]["dramaq-scrape.yml"])
    if not (isinstance(jobs, list) and all("job_name" in j for j in jobs)):
        problem(name, "the scrape snippet is not a list of scrape configs")


def check_compose():
    compose = DEPLOY / "compose" / "compose.yaml"
    out = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True, text=True)
    if out.returncode != 0:
        problem(compose, out.stdout + out.stderr)
    (doc,) = load_all(compose)
    cfg = tomllib.loads((DEPLOY / "compose" / "dramaq.toml").read_text())
    grace_ms = cfg["worker"].get("shutdown_grace_ms", 20000)
    stop = doc["services"]["worker"].get("stop_grace_period", "10s")
    if not stop.endswith("s") or int(stop[:-1]) * 1000 <= grace_ms:
        problem(compose, f"worker stop_grace_period {stop} is not longer than shutdown_grace_ms {grace_ms}")
    redis_cmd = " ".join(doc["services"]["redis"]["command"])
    conf = (DEPLOY / "redis" / "redis.conf").read_text()
    for want in ("maxmemory-policy noeviction", "appendonly yes", "appendfsync everysec"):
        if want not in conf or want.split()[0] in redis_cmd:
            problem(compose, f"Redis does not run with `{want}`")
    for mount in [v.split(":")[0] for s in doc["services"].values() for v in s.get("volumes", [])]:
        if mount.startswith(".") and not (DEPLOY / "compose" / mount).exists():
            problem(compose, f"mounts {mount}, which does not exist")


def main():
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        try:
            load_all(path)
        except yaml.YAMLError as e:
            problem(path, f"does not parse: {e}")
    check_compose()
    check_objects("base", render(K8S / "base"))
    for overlay in sorted((K8S / "overlays").iterdir()):
        objects = render(overlay)
        check_objects(f"overlay {overlay.name}", objects)
    if problems:
        print("deploy files: problems found", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("deploy files: YAML, compose schema, Kubernetes schemas and cross-checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
