#!/usr/bin/env python3
"""Real Helm (v4, the `helm-python-sdk` wheel's embedded engine) for the tests and for people
without a helm CLI. scripts/setup.sh installs the wheel into a virtualenv and exports
MAILSEC_PYTHON; run this file with that interpreter.

  helm.py lint CHART [--values JSON]                 strict lint; exit 1 on any warning or error
  helm.py render CHART --name N --namespace NS [--values JSON]
                                                     {"template path": "manifest", ...} as JSON
  helm.py install|upgrade CHART --name N --namespace NS --kubeconfig FILE [--values JSON]
                                                     [--force-conflicts] (upgrade: as Helm 4's flag)
  helm.py uninstall --name N --namespace NS --kubeconfig FILE
  helm.py crds CHART                                 the chart's crds/ files as JSON
"""
import argparse
import json
import sys

import helm_python as helm
from helm_python import _native


def upgrade_forcing_conflicts(cfg, chart, name, values, namespace, timeout):
    """`helm upgrade --force-conflicts` (Helm 4): server-side apply takes over fields another
    field manager owns. helm-python-sdk 0.2 does not expose the option, which its engine's
    upgrade takes (`force_conflicts`), so this passes it the way Config.upgrade passes the
    others."""
    handle, ref = cfg._chart_args(chart)
    payload = _native.call_string(
        "helm_upgrade",
        cfg._raw(),
        cfg._context_arg(None),
        handle,
        ref,
        name,
        json.dumps(values),
        json.dumps({"namespace": namespace, "timeout_seconds": timeout, "force_conflicts": True}),
    )
    return json.loads(payload)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["lint", "render", "install", "upgrade", "uninstall", "crds"])
    p.add_argument("chart", nargs="?")
    p.add_argument("--name", default="mailsec-operator")
    p.add_argument("--namespace", default="mailsec-system")
    p.add_argument("--values", default="{}", help="values as a JSON object")
    p.add_argument("--kubeconfig")
    p.add_argument("--force-conflicts", action="store_true")
    a = p.parse_args()
    values = json.loads(a.values)

    if a.command == "lint":
        report = helm.lint(a.chart, values, strict=True, namespace=a.namespace)
        print(json.dumps(report, indent=2))
        # Severity: 1 info, 2 warning, 3 error. Strict lint fails on warnings and errors.
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        return 1 if bad or report.get("errors") else 0
    if a.command == "render":
        chart = helm.Chart.load(a.chart)
        chart.validate_schema(values)
        out = chart.render(values, name=a.name, namespace=a.namespace, is_install=True)
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    if a.command == "crds":
        print(json.dumps(helm.Chart.load(a.chart).crds, indent=2))
        return 0
    with helm.Config(kubeconfig_path=a.kubeconfig, namespace=a.namespace) as cfg:
        if a.command == "install":
            r = cfg.install(a.chart, a.name, values, namespace=a.namespace, create_namespace=True, timeout=120)
        elif a.command == "upgrade" and a.force_conflicts:
            r = upgrade_forcing_conflicts(cfg, a.chart, a.name, values, a.namespace, 120)
        elif a.command == "upgrade":
            r = cfg.upgrade(a.chart, a.name, values, namespace=a.namespace, timeout=120)
        else:
            r = cfg.uninstall(a.name, timeout=120)
        print(json.dumps(r, indent=2, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm.HelmError as e:
        print(f"helm: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
