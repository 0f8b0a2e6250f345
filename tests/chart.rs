//! The Helm chart, with the real Helm v4 engine (the `helm-python-sdk` wheel, see
//! scripts/helm.py): strict lint, rendering and its contract (security, probes, RBAC without
//! wildcards, optional ServiceMonitor, values schema), the rendered objects applied to the real
//! API server with server-side apply, and a real `helm install` / `upgrade` / `uninstall` that
//! leaves the CRDs and the data in place.
//!
//! The test API server has no prometheus-operator, so the ServiceMonitor is only rendered and
//! checked, never applied. It runs no controllers either: the Deployment is stored, no pod starts
//! (the operator's own behaviour under leader election is tested in tests/leader.rs).

mod common;

use common::tools::{chart_dir, find, objects, render, run_python};
use common::{cluster, describe, kubectl, kubectl_stdin, repo_dir, unique_name};
use serde_json::{Value, json};

fn defaults(namespace: &str) -> Vec<Value> {
    objects(&render(&json!({}), "mailsec-operator", namespace).expect("render the defaults"))
}

#[test]
fn chart_crds_are_the_repository_crds() {
    let repo = std::fs::read_to_string(repo_dir().join("crds/mailsec.io_crds.yaml")).expect("crds");
    let chart = std::fs::read_to_string(chart_dir().join("crds/mailsec.io_crds.yaml"))
        .expect("the chart's crds/mailsec.io_crds.yaml");
    assert!(
        repo == chart,
        "charts/mailsec-operator/crds/mailsec.io_crds.yaml differs from crds/mailsec.io_crds.yaml; \
         copy it: cp crds/mailsec.io_crds.yaml charts/mailsec-operator/crds/"
    );
    let files: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))
        .expect("crds dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "only the generated CRDs in the chart's crds/: {files:?}"
    );
    // Helm reads them as CRDs (not templates), so they are installed before the templates and
    // never deleted.
    let out = run_python(
        "helm.py",
        &["crds", chart_dir().to_str().expect("path")],
        "",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let crds: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(crds.len(), 1, "{crds:?}");
    assert_eq!(
        crds[0]["filename"],
        "mailsec-operator/crds/mailsec.io_crds.yaml"
    );
}

#[test]
fn chart_passes_strict_lint() {
    for values in [
        json!({}),
        json!({"serviceMonitor": {"enabled": true}, "replicaCount": 3}),
        json!({"replicaCount": 1, "leaderElection": {"enabled": false}, "rbac": {"create": false}, "serviceAccount": {"create": false, "name": "ops"}}),
    ] {
        let out = run_python(
            "helm.py",
            &[
                "lint",
                chart_dir().to_str().expect("path"),
                "--values",
                &values.to_string(),
            ],
            "",
        );
        assert!(
            out.status.success(),
            "helm lint --strict with {values}: {}",
            describe(&out)
        );
    }
}

#[test]
fn deployment_runs_two_restricted_replicas_with_leader_election_and_probes() {
    let objs = defaults("mailsec-system");
    let deploy = find(&objs, "Deployment");
    assert_eq!(deploy.len(), 1);
    let d = deploy[0];
    assert_eq!(d["metadata"]["namespace"], "mailsec-system");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{sc}");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{c}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "run",
        "--warning-period=30d",
        "--grace-period=30d",
        "--log-format=json",
        "--leader-election",
        "--lease-name=mailsec-operator",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--lease-duration=15s",
        "--metrics-addr=0.0.0.0:8080",
    ] {
        assert!(args.contains(&expected), "{expected} missing from {args:?}");
    }
    // The args the chart passes are ones the binary accepts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailsec-operator"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{}", describe(&out));

    let env = c["env"].as_array().expect("env");
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.iter()
                .any(|e| e["name"] == name && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{name} from the downward API: {env:?}"
        );
    }

    let pdb = find(&objs, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["maxUnavailable"], 1);
    let svc = find(&objs, "Service");
    assert_eq!(svc[0]["spec"]["ports"][0]["targetPort"], "http-metrics");
    assert!(
        find(&objs, "ServiceMonitor").is_empty(),
        "no ServiceMonitor unless enabled"
    );
}

#[test]
fn rbac_has_no_wildcards_and_the_lease_role_is_namespaced() {
    let objs = defaults("ops");
    for role in find(&objs, "ClusterRole")
        .into_iter()
        .chain(find(&objs, "Role"))
    {
        for rule in role["rules"].as_array().expect("rules") {
            for key in ["apiGroups", "resources", "verbs"] {
                let list = rule[key].as_array().expect(key);
                assert!(!list.is_empty(), "{key} empty in {rule}");
                assert!(
                    list.iter()
                        .all(|v| v.as_str().is_some_and(|s| !s.contains('*'))),
                    "wildcard in {rule}"
                );
            }
        }
    }
    let roles = find(&objs, "Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], "ops");
    assert_eq!(roles[0]["rules"][0]["resources"], json!(["leases"]));
    let binding = find(&objs, "ClusterRoleBinding");
    assert_eq!(binding[0]["subjects"][0]["namespace"], "ops");
    assert_eq!(binding[0]["subjects"][0]["name"], "mailsec-operator");

    // Without leader election there is no Lease, so no Role.
    let single = objects(
        &render(
            &json!({"replicaCount": 1, "leaderElection": {"enabled": false}}),
            "m",
            "ops",
        )
        .expect("render"),
    );
    assert!(find(&single, "Role").is_empty());
    let args = single
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["args"].to_string())
        .expect("deployment");
    assert!(!args.contains("--leader-election"), "{args}");
}

#[test]
fn service_monitor_renders_only_when_enabled() {
    let objs = objects(
        &render(
            &json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}),
            "mailsec-operator",
            "mon",
        )
        .expect("render"),
    );
    let sm = find(&objs, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    assert_eq!(sm[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm[0]["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["port"], "http-metrics");
    let svc = find(&objs, "Service");
    assert_eq!(
        sm[0]["spec"]["selector"]["matchLabels"], svc[0]["spec"]["selector"],
        "the ServiceMonitor selects the metrics Service"
    );
}

#[test]
fn values_are_checked_by_the_schema_and_the_templates() {
    for (values, expected) in [
        (
            json!({"policy": {"warningPeriod": "soon"}}),
            "warningPeriod",
        ),
        (json!({"replicaCount": 0}), "replicaCount"),
        (json!({"logging": {"format": "xml"}}), "format"),
        (
            json!({"leaderElection": {"leaseDuration": "1.5s"}}),
            "leaseDuration",
        ),
        (json!({"unknownKey": 1}), "unknownKey"),
        (
            json!({"replicaCount": 2, "leaderElection": {"enabled": false}}),
            "needs leaderElection.enabled=true",
        ),
    ] {
        let err = render(&values, "m", "ns").expect_err(&format!("{values} must be refused"));
        assert!(err.contains(expected), "{values}: {err}");
    }
}

#[test]
fn notes_show_how_to_check_status() {
    let rendered = render(&json!({}), "mailsec-operator", "mailsec-system").expect("render");
    let notes = rendered
        .iter()
        .find(|(k, _)| k.ends_with("NOTES.txt"))
        .map(|(_, v)| v.clone())
        .expect("NOTES.txt");
    for expected in [
        "kubectl get tenants,subscriptions",
        "kubectl wait --for=condition=Ready tenant/",
        "mailsec.io/tenant=<tenant name>",
        "mailsec.io/product=<product>",
        "get lease mailsec-operator",
        "keeps the CRDs",
    ] {
        assert!(
            notes.contains(expected),
            "{expected:?} missing from NOTES:\n{notes}"
        );
    }
}

#[test]
fn rendered_chart_applies_to_the_api_server() {
    let ns = unique_name("chart");
    let out = kubectl(&["create", "namespace", &ns]);
    assert!(out.status.success(), "{}", describe(&out));
    // A release name of its own, so cluster-scoped names do not collide with other tests.
    let release = unique_name("msop");
    let full = format!("{release}-mailsec-operator");
    let rendered =
        render(&json!({"serviceMonitor": {"enabled": true}}), &release, &ns).expect("render");
    let mut applied = Vec::new();
    let mut yaml = String::new();
    for obj in objects(&rendered) {
        // Not served by the test API server (no prometheus-operator CRDs): rendered above,
        // not applied.
        if obj["kind"] == "ServiceMonitor" {
            continue;
        }
        applied.push(format!(
            "{}/{}",
            obj["kind"].as_str().unwrap_or_default(),
            obj["metadata"]["name"].as_str().unwrap_or_default()
        ));
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(&obj).expect("yaml"));
    }
    let out = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=helm-test",
            "-f",
            "-",
        ],
        &yaml,
    );
    assert!(
        out.status.success(),
        "server-side apply of the rendered chart: {}",
        describe(&out)
    );
    applied.sort();
    assert_eq!(
        applied,
        [
            format!("ClusterRole/{full}"),
            format!("ClusterRoleBinding/{full}"),
            format!("Deployment/{full}"),
            format!("PodDisruptionBudget/{full}"),
            format!("Role/{full}-leader-election"),
            format!("RoleBinding/{full}-leader-election"),
            format!("Service/{full}-metrics"),
            format!("ServiceAccount/{full}"),
            format!("ValidatingAdmissionPolicy/{full}-read-only-settings"),
            format!("ValidatingAdmissionPolicyBinding/{full}-read-only-settings"),
        ]
    );
    // Read back: the namespaced objects are in the release namespace.
    let out = kubectl(&[
        "get",
        "-n",
        &ns,
        "deployment,serviceaccount,service,poddisruptionbudget,role,rolebinding",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        6,
        "{}",
        describe(&out)
    );
    let _ = kubectl(&[
        "delete",
        "clusterrole,clusterrolebinding",
        &full,
        "--wait=false",
    ]);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn helm_install_upgrade_and_uninstall_keep_the_crds_and_the_data() {
    if cluster().is_external() {
        eprintln!("skipped on an external cluster: it installs and uninstalls a Helm release");
        return;
    }
    let ns = unique_name("helm");
    let release = unique_name("msop");
    let full = format!("{release}-mailsec-operator");
    let kubeconfig = cluster().kubeconfig().to_str().expect("path").to_string();
    let chart = chart_dir().to_str().expect("path").to_string();
    let helm = |command: &str, values: &str| {
        run_python(
            "helm.py",
            &[
                command,
                &chart,
                "--name",
                &release,
                "--namespace",
                &ns,
                "--kubeconfig",
                &kubeconfig,
                "--values",
                values,
            ],
            "",
        )
    };
    let out = helm("install", "{}");
    assert!(out.status.success(), "helm install: {}", describe(&out));
    let release_doc: Value = serde_json::from_slice(&out.stdout).expect("release json");
    assert_eq!(release_doc["status"], "deployed", "{release_doc}");

    // Data the operator manages, created while the release is installed.
    let tenant = unique_name("helmdata");
    let out = kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &format!(
            "apiVersion: mailsec.io/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec: {{users: 1}}\n"
        ),
    );
    assert!(out.status.success(), "{}", describe(&out));

    let out = helm(
        "upgrade",
        r#"{"policy": {"warningPeriod": "14d"}, "leaderElection": {"leaseDuration": "20s"}}"#,
    );
    assert!(out.status.success(), "helm upgrade: {}", describe(&out));
    let out = kubectl(&[
        "get",
        "deployment",
        "-n",
        &ns,
        &full,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    let args = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        args.contains("--warning-period=14d") && args.contains("--lease-duration=20s"),
        "{}",
        describe(&out)
    );

    let out = run_python(
        "helm.py",
        &[
            "uninstall",
            "--name",
            &release,
            "--namespace",
            &ns,
            "--kubeconfig",
            &kubeconfig,
        ],
        "",
    );
    assert!(out.status.success(), "helm uninstall: {}", describe(&out));
    let out = kubectl(&[
        "get",
        "deployment",
        "-n",
        &ns,
        &full,
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    assert!(
        out.stdout.is_empty(),
        "the release's objects are gone: {}",
        describe(&out)
    );
    // Helm never deletes CRDs, so no Tenant or Subscription is lost with the release.
    let out = kubectl(&[
        "get",
        "crd",
        "tenants.mailsec.io",
        "subscriptions.mailsec.io",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "CRDs kept: {}", describe(&out));
    let out = kubectl(&["get", "tenant", &tenant, "-o", "name"]);
    assert!(out.status.success(), "data kept: {}", describe(&out));
    let _ = kubectl(&["delete", "tenant", &tenant, "--wait=false"]);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn chart_ships_the_read_only_admission_policy_of_deploy() {
    let deploy = std::fs::read_to_string(repo_dir().join("deploy/read-only-policy.yaml"))
        .expect("deploy/read-only-policy.yaml");
    let template = std::fs::read_to_string(chart_dir().join("templates/read-only-policy.yaml"))
        .expect("template");
    // The chart's copy names the policy after the release; everything else is the same text.
    let release_named = deploy
        .replace(
            "  name: mailsec-read-only-settings\n",
            "  name: {{ include \"mailsec-operator.fullname\" . }}-read-only-settings\n",
        )
        .replace(
            "  policyName: mailsec-read-only-settings\n",
            "  policyName: {{ include \"mailsec-operator.fullname\" . }}-read-only-settings\n",
        );
    assert_eq!(
        template,
        format!("{{{{- if .Values.readOnlyPolicy.enabled }}}}\n{release_named}{{{{- end }}}}\n"),
        "charts/mailsec-operator/templates/read-only-policy.yaml must be deploy/read-only-policy.yaml named after the release and wrapped in the readOnlyPolicy.enabled condition"
    );
    let objs = defaults("mailsec-system");
    assert_eq!(find(&objs, "ValidatingAdmissionPolicy").len(), 1);
    assert_eq!(find(&objs, "ValidatingAdmissionPolicyBinding").len(), 1);
    let off = objects(
        &render(
            &json!({"readOnlyPolicy": {"enabled": false}}),
            "mailsec-operator",
            "mailsec-system",
        )
        .expect("render"),
    );
    assert!(find(&off, "ValidatingAdmissionPolicy").is_empty());
}

#[test]
fn notifications_are_configured_from_values_with_mounted_secrets() {
    let values = json!({"notifications": {
        "smtp": {"url": "smtp://mail.example:587?tls=starttls", "from": "Licensing <licensing@example.com>", "credentialsSecret": "smtp-auth"},
        "webhook": {"url": "https://hooks.example/mailsec", "secretName": "webhook-key"},
        "milestones": ["ExpiringSoon", "Suspended"],
    }});
    let objs = objects(&render(&values, "mailsec-operator", "mailsec-system").expect("render"));
    let deployment = find(&objs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--smtp-url=smtp://mail.example:587?tls=starttls",
        "--smtp-from=Licensing <licensing@example.com>",
        "--smtp-credentials-file=/etc/mailsec/smtp",
        "--webhook-url=https://hooks.example/mailsec",
        "--webhook-secret-file=/etc/mailsec/webhook/secret",
        "--notify-milestones=ExpiringSoon,Suspended",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(volumes, ["smtp-auth", "webhook-key"]);
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(mounts.iter().all(|m| m["readOnly"] == true));

    // Off by default: no notifier flags, no volumes (the root filesystem stays read-only).
    let defaults = defaults("mailsec-system");
    let pod = &find(&defaults, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null(), "{pod}");
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        !args.contains("--smtp-url") && !args.contains("--webhook-url"),
        "{args}"
    );

    // A webhook without its signing secret is refused at render time.
    let err = render(
        &json!({"notifications": {"webhook": {"url": "https://hooks.example/x"}}}),
        "mailsec-operator",
        "mailsec-system",
    );
    assert!(err.is_err(), "rendered without a webhook secret");
}
