"""The bot's own deployment (deploy/kubernetes, deploy/azure): the properties that matter.

CI also validates the Kubernetes manifests against the API schemas (kubernetes-validate, strict)
and scans the Bicep with checkov (deploy/check); these tests check what a schema cannot: two
replicas, probes on paths the bot's HTTP server answers, a non-root read-only container, the
disruption budget, secrets by reference only, and only environment variables the bot reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.http_server import SlackWsgiApp
from bot.settings import Settings
from procedures.policy import parse_policy

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
AZURE = ROOT / "deploy" / "azure"

# The settings that hold a secret: never a literal value in a manifest.
SECRET_SETTINGS = {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
                   "QLP_DATABASE_URL", "QLP_AUDIT_KEY", "QLP_AUDIT_OLD_KEYS", "SMTP_PASSWORD",
                   "GITHUB_TOKEN"}
# What a token, a key or a password in a URL looks like.
SECRET_LOOKING = re.compile(r"xox[abpr]-[0-9A-Za-z-]{6,}|xapp-[0-9A-Za-z-]{6,}|"
                            r"://[^/\s:@]+:[^/\s@]+@|\b[0-9a-f]{64}\b")


def settings_names() -> set[str]:
    """Every environment variable bot/settings.py reads."""
    return {str(field.alias) for field in Settings.model_fields.values() if field.alias}


# -- Kubernetes ---------------------------------------------------------------------------------


def kube_documents() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], dict[str, Any]]:
    return kube_documents()


@pytest.fixture(scope="module")
def deployment(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return docs[("Deployment", "qlp-bot")]


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_the_kustomization_lists_every_manifest_and_only_known_kinds() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == "qlp"
    # kubernetes-validate only warns about a kind it has no schema for: a misspelt kind would
    # pass it, so the kinds are pinned here.
    kinds = {kind for kind, _ in kube_documents()}
    assert kinds == {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget", "Ingress"}
    assert not any(p.suffix == ".yml" for p in KUBE.iterdir())  # CI validates *.yaml


def test_two_replicas_of_qlp_bot_serve(deployment: dict[str, Any],
                                       container: dict[str, Any]) -> None:
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = container["args"]
    assert args[:2] == ["qlp-bot", "serve"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    # The Dockerfile's port and user are the ones the manifest relies on.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"EXPOSE {port}" in dockerfile
    assert "USER 10001:10001" in dockerfile


class _Health:
    def __init__(self) -> None:
        self.report: dict[str, Any] = {"status": "ok", "ready": True}

    def __call__(self) -> dict[str, Any]:
        return self.report


class _NoMetrics:
    def render(self) -> str:
        return ""


def _get(app: SlackWsgiApp, path: str) -> int:
    status: list[str] = []
    app({"REQUEST_METHOD": "GET", "PATH_INFO": path},
        lambda s, headers, exc_info=None: status.append(s))  # type: ignore[arg-type,return-value]
    return int(status[0].split()[0])


def test_the_probes_ask_paths_the_bots_http_server_answers(container: dict[str, Any]) -> None:
    health = _Health()
    app = SlackWsgiApp(object(), health, _NoMetrics(),  # type: ignore[arg-type]
                       signing_secret="s" * 32)
    assert _get(app, "/no-such-probe") == 404
    liveness = container["livenessProbe"]["httpGet"]["path"]
    readiness = container["readinessProbe"]["httpGet"]["path"]
    startup = container["startupProbe"]["httpGet"]["path"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert {_get(app, p) for p in (liveness, readiness, startup)} == {200}
    # Liveness follows `status`, readiness `ready`: a not-ready bot is not restarted.
    health.report = {"status": "ok", "ready": False}
    assert _get(app, liveness) == 200 and _get(app, startup) == 200
    assert _get(app, readiness) == 503
    health.report = {"status": "failing", "ready": False}
    assert _get(app, liveness) == 503


def test_non_root_read_only_no_capabilities(deployment: dict[str, Any],
                                            container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001 and security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    namespace = kube_documents()[("Namespace", "qlp")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_where_the_bot_writes_is_a_volume(deployment: dict[str, Any],
                                          container: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for writable in (env["QLP_HOME"], "/tmp"):
        mount = mounts[writable]
        assert not mount.get("readOnly", False)
        assert "emptyDir" in volumes[mount["name"]]
        assert volumes[mount["name"]]["emptyDir"]["sizeLimit"]


def test_the_policy_configmap_is_mounted_where_qlp_config_points_and_loads(
        docs: dict[tuple[str, str], dict[str, Any]], deployment: dict[str, Any],
        container: dict[str, Any]) -> None:
    config = Path(next(e["value"] for e in container["env"] if e["name"] == "QLP_CONFIG"))
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    configmap = docs[("ConfigMap", volume["configMap"]["name"])]
    key = next(i["key"] for i in volume["configMap"]["items"] if i["path"] == config.name)
    text = configmap["data"][key]
    policy = parse_policy(yaml.safe_load(text), source="deploy/kubernetes policy")
    assert policy.environments
    assert not SECRET_LOOKING.search(text)


def test_resources_requested_and_limited(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])


def test_the_disruption_budget_keeps_one_replica(
        docs: dict[tuple[str, str], dict[str, Any]], deployment: dict[str, Any]) -> None:
    pdb = docs[("PodDisruptionBudget", "qlp-bot")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs[("Service", "qlp-bot")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_only_slack_events_are_exposed_outside(docs: dict[tuple[str, str], dict[str, Any]]) -> None:
    ingress = docs[("Ingress", "qlp-bot")]
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/slack/events", "Exact")]
    assert ingress["spec"]["tls"]


def test_secrets_by_reference_and_only_settings_the_bot_reads(container: dict[str, Any]) -> None:
    known = settings_names()
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= known, set(names) - known
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "QLP_DATABASE_URL", "QLP_AUDIT_KEY",
            "QLP_CONFIG", "QLP_HOME"} <= set(names)
    for entry in container["env"]:
        if entry["name"] in SECRET_SETTINGS:
            assert "value" not in entry, entry["name"]
            assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry["name"]
        else:
            assert "value" in entry, entry["name"]
    assert "envFrom" not in container  # every variable is named, so each is checked above
    for path in KUBE.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert "kind: Secret" not in text, path.name
        # Only the comments' examples (elided with ...) may look like a token.
        for line in text.splitlines():
            if not line.lstrip().startswith("#"):
                assert not SECRET_LOOKING.search(line), (path.name, line)


# -- Azure Container Apps (Bicep, read as text: no Bicep compiler offline) ----------------------


@pytest.fixture(scope="module")
def bicep() -> str:
    return (AZURE / "main.bicep").read_text(encoding="utf-8")


def test_azure_two_replicas_probes_and_only_settings_the_bot_reads(bicep: str) -> None:
    assert re.search(r"minReplicas: 2\b", bicep) and re.search(r"maxReplicas: 2\b", bicep)
    assert "args: ['serve', '--host', '0.0.0.0', '--port', '3000']" in bicep
    assert "targetPort: 3000" in bicep
    probes = dict(re.findall(r"type: '(\w+)'\s+httpGet: \{ path: '([^']+)', port: 3000 \}",
                             bicep))
    assert probes == {"Startup": "/livez", "Liveness": "/livez", "Readiness": "/readyz"}
    env = re.findall(r"\{ name: '([A-Z_]+)', (value|secretRef): '([^']*)' \}", bicep)
    names = [name for name, _, _ in env]
    assert set(names) <= settings_names(), set(names) - settings_names()
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "QLP_DATABASE_URL",
            "QLP_AUDIT_KEY", "QLP_CONFIG"} <= set(names)
    for name, kind, _ in env:
        assert (kind == "secretRef") == (name in SECRET_SETTINGS), name


def test_azure_secrets_are_key_vault_references(bicep: str) -> None:
    secrets = bicep.split("secrets: [", 1)[1].split("\n      ]", 1)[0]
    names = re.findall(r"name: '([a-z-]+)'", secrets)
    referenced = re.findall(r"name: '([a-z-]+)'\s+keyVaultUrl: '\$\{vault\.properties\.vaultUri\}"
                            r"secrets/\1'\s+identity: identity\.id", secrets)
    # Every secret but the policy file (not secret; Container Apps mounts files from secrets).
    assert set(names) - set(referenced) == {"qlp-policy"}
    assert {"slack-bot-token", "slack-signing-secret", "qlp-database-url",
            "qlp-audit-key"} <= set(referenced)
    assert not SECRET_LOOKING.search(bicep)
    policy = parse_policy(yaml.safe_load((AZURE / "qlp.yml").read_text(encoding="utf-8")),
                          source="deploy/azure/qlp.yml")
    assert policy.environments


def test_azure_identity_holds_the_role_tables_roles_by_their_builtin_ids(bicep: str) -> None:
    from procedures.platforms.azure.doctor import LEGACY_PULL_ROLES
    from procedures.platforms.azure.roles import ROLE_TABLE

    table = re.search(r"var roles = \{(.*?)\n\}", bicep, re.S)
    assert table
    ids = {name.strip("'"): guid for name, guid in
           re.findall(r"^\s+('[^']+'|\w+): '([0-9a-f-]{36})'$", table.group(1), re.M)}
    assigned = re.search(r"var assignedRoles = \[(.*?)\n\]", bicep, re.S)
    assert assigned
    assigned_names = set(re.findall(r"'([^']+)'", assigned.group(1)))
    assert assigned_names == set(ids)
    # The roles the bot itself needs (the groups' AcrPull and the classic Front Door's
    # Network Contributor aside), named as procedures.platforms.azure.roles names them.
    needed = {need.role for need in ROLE_TABLE} - {"AcrPull", "Network Contributor"}
    assert needed <= assigned_names
    # The GUIDs the doctor module also knows agree.
    for guid, name in LEGACY_PULL_ROLES.items():
        if name in ids:
            assert ids[name] == guid
    assert "principalType: 'ServicePrincipal'" in bicep
    assert "@secure()\nparam postgresAdminPassword string\n" in bicep
    assert re.search(r"publicNetworkAccess: 'Disabled'", bicep)
