"""deploy/kubernetes/ parses and validates against the Kubernetes schemas (strict)."""
import pathlib

import kubernetes_validate
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.31.0"


def documents():
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def test_every_manifest_validates_strictly():
    docs = list(documents())
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Secret"} <= kinds
    for name, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deployment_probes_gpu_and_secret():
    dep = next(d for _, d in documents() if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    key = next(e for e in c["env"] if e["name"] == "MEDGEMMA_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == "medgemma-api-key"
    mounts = {m["name"] for m in c["volumeMounts"]}
    assert "hub-cache" in mounts
