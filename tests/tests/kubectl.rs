//! The real kubectl against control: the kubectl on PATH and the oldest and
//! newest versioned kubectls installed beside it, each driving the same
//! scenario of everyday commands and checking what they print.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, ensure};
use capstan_tests::{
    Instance,
    control::{TestControl, kubectl_binaries, succeeded},
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Kubectl<'a> {
    control: &'a TestControl,
    binary: PathBuf,
    namespace: String,
}

impl Kubectl<'_> {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut command = self.control.kubectl(&self.binary);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap()
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        succeeded(
            &self.run(args, None).await,
            &format!("kubectl {}", args.join(" ")),
        )
    }

    async fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        succeeded(
            &self.run(&["apply", "-f", "-"], Some(manifest)).await,
            "kubectl apply",
        )
    }

    /// stderr of a command that must fail.
    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let output = self.run(args, stdin).await;
        ensure!(
            !output.status.success(),
            "kubectl {} succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn manifest(ns: &str, with_env: bool) -> String {
    let container_extra = if with_env {
        "        env:\n        - name: MODE\n          value: demo\n"
    } else {
        "        resources:\n          requests:\n            cpu: 100m\n"
    };
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: {ns}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: {ns}
stringData:
  password: s3cret
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: capstan.invalid/testapp:v1
        ports:
        - containerPort: 8080
{container_extra}"
    )
}

async fn scenario(k: &Kubectl<'_>) -> anyhow::Result<()> {
    let ns = k.namespace.as_str();
    let n = ["-n", ns];
    let run_ns = |args: &[&'static str]| {
        let owned: Vec<String> = args.iter().chain(n.iter()).map(|a| a.to_string()).collect();
        async move {
            k.ok(&owned.iter().map(String::as_str).collect::<Vec<_>>())
                .await
        }
    };

    // apply a multi-document manifest
    let applied = k.apply(&manifest(ns, true)).await?;
    for line in [
        "namespace/{ns} created",
        "configmap/web-config created",
        "secret/web-secret created",
        "service/web created",
        "deployment.apps/web created",
    ] {
        let line = line.replace("{ns}", ns);
        ensure!(
            applied.contains(&line),
            "apply printed {applied:?}, not {line:?}"
        );
    }

    // get: table, wide, yaml, json, jsonpath, selectors, all namespaces
    let table = run_ns(&["get", "deployments"]).await?;
    ensure!(
        table.starts_with("NAME")
            && table.contains("READY")
            && table.contains("UP-TO-DATE")
            && table.contains("AVAILABLE"),
        "{table}"
    );
    ensure!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web ") && l.contains("0/2")),
        "{table}"
    );
    let wide = run_ns(&["get", "deployments", "-o", "wide"]).await?;
    ensure!(
        wide.contains("CONTAINERS")
            && wide.contains("capstan.invalid/testapp:v1")
            && wide.contains("app=web"),
        "{wide}"
    );
    let services = run_ns(&["get", "services"]).await?;
    ensure!(
        services.contains("CLUSTER-IP")
            && services.contains("80/TCP")
            && services.contains("ClusterIP"),
        "{services}"
    );
    let yaml = run_ns(&["get", "deployment", "web", "-o", "yaml"]).await?;
    ensure!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let json: Value =
        serde_json::from_str(&run_ns(&["get", "deployment", "web", "-o", "json"]).await?)?;
    ensure!(
        json["spec"]["replicas"] == 2 && json["metadata"]["uid"].is_string(),
        "{json}"
    );
    let image = run_ns(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
    .await?;
    ensure!(image == "capstan.invalid/testapp:v1", "{image}");
    let labelled = run_ns(&["get", "deployments", "-l", "app=web", "-o", "name"]).await?;
    ensure!(labelled.trim() == "deployment.apps/web", "{labelled}");
    let fielded = run_ns(&[
        "get",
        "configmaps",
        "--field-selector",
        "metadata.name=web-config",
        "-o",
        "name",
    ])
    .await?;
    ensure!(fielded.trim() == "configmap/web-config", "{fielded}");
    let everywhere = k.ok(&["get", "services", "-A"]).await?;
    ensure!(
        everywhere.starts_with("NAMESPACE")
            && everywhere.contains("kubernetes")
            && everywhere.contains(ns),
        "{everywhere}"
    );

    // describe
    let described = run_ns(&["describe", "deployment", "web"]).await?;
    ensure!(
        described.contains("Replicas:")
            && described.contains("2 desired")
            && described.contains("Selector:"),
        "{described}"
    );

    // edit, through an editor script
    let editor = std::env::temp_dir().join(format!("capstan-editor-{}", std::process::id()));
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/greeting: hello/greeting: edited/' \"$1\"\n",
    )?;
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut edit = k.control.kubectl(&k.binary);
    let edited = edit
        .args(["edit", "configmap", "web-config", "-n", ns])
        .env("KUBE_EDITOR", &editor)
        .output()
        .await?;
    succeeded(&edited, "kubectl edit")?;
    let greeting = run_ns(&[
        "get",
        "configmap",
        "web-config",
        "-o",
        "jsonpath={.data.greeting}",
    ])
    .await?;
    ensure!(greeting == "edited", "{greeting}");

    // patch: strategic, merge, JSON
    k.ok(&["patch", "deployment", "web", "-n", ns, "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"capstan.invalid/testapp:v2"}]}}}}"#]).await?;
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ])
    .await?;
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]"#,
    ])
    .await?;
    let patched: Value =
        serde_json::from_str(&run_ns(&["get", "deployment", "web", "-o", "json"]).await?)?;
    let container = &patched["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        container["image"] == "capstan.invalid/testapp:v2" && container["env"][0]["name"] == "MODE",
        "strategic patch: {container}"
    );
    ensure!(
        patched["spec"]["minReadySeconds"] == 5 && patched["spec"]["revisionHistoryLimit"] == 3,
        "{patched}"
    );

    // label, annotate, scale
    k.ok(&["label", "deployment", "web", "-n", ns, "tier=front"])
        .await?;
    k.ok(&["annotate", "deployment", "web", "-n", ns, "note=hello"])
        .await?;
    let scaled = k
        .ok(&["scale", "deployment", "web", "-n", ns, "--replicas=4"])
        .await?;
    ensure!(scaled.contains("scaled"), "{scaled}");
    let meta: Value =
        serde_json::from_str(&run_ns(&["get", "deployment", "web", "-o", "json"]).await?)?;
    ensure!(
        meta["metadata"]["labels"]["tier"] == "front"
            && meta["metadata"]["annotations"]["note"] == "hello",
        "{}",
        meta["metadata"]
    );
    ensure!(
        meta["spec"]["replicas"] == 4,
        "{}",
        meta["spec"]["replicas"]
    );

    // apply again: one field gone (env), one new (resources)
    let reapplied = k.apply(&manifest(ns, false)).await?;
    ensure!(
        reapplied.contains("deployment.apps/web configured"),
        "{reapplied}"
    );
    ensure!(reapplied.contains("service/web unchanged"), "{reapplied}");
    let after: Value =
        serde_json::from_str(&run_ns(&["get", "deployment", "web", "-o", "json"]).await?)?;
    let container = &after["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        container.get("env").is_none(),
        "env was not removed: {container}"
    );
    ensure!(
        container["resources"]["requests"]["cpu"] == "100m",
        "resources were not added: {container}"
    );
    ensure!(
        after["spec"]["replicas"] == 2,
        "replicas follow the manifest again: {}",
        after["spec"]["replicas"]
    );

    // get -w sees ADDED, MODIFIED, DELETED
    let mut watch = k.control.kubectl(&k.binary);
    let mut watcher = watch
        .args([
            "get",
            "configmaps",
            "-n",
            ns,
            "-w",
            "--output-watch-events",
            "-l",
            "watched=yes",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(watcher.stdout.take().context("watch stdout")?).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n  namespace: {ns}\n  labels:\n    watched: \"yes\"\ndata:\n  a: \"1\"\n")).await?;
    k.ok(&["label", "configmap", "watched", "-n", ns, "step=two"])
        .await?;
    let deleted = k
        .ok(&["delete", "configmap", "watched", "-n", ns, "--wait"])
        .await?;
    ensure!(
        deleted.contains("configmap \"watched\" deleted"),
        "{deleted}"
    );
    let mut events = Vec::new();
    while events.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("watch output")??
            .context("watch ended")?;
        if let Some(event) = line
            .split_whitespace()
            .next()
            .filter(|e| ["ADDED", "MODIFIED", "DELETED"].contains(e))
        {
            events.push(event.to_owned());
        }
    }
    watcher.kill().await.ok();
    ensure!(
        events == ["ADDED", "MODIFIED", "DELETED"],
        "watch saw {events:?}"
    );
    let gone = k
        .fails(&["get", "configmap", "watched", "-n", ns], None)
        .await?;
    ensure!(
        gone.contains("Error from server (NotFound): configmaps \"watched\" not found"),
        "{gone}"
    );

    // explain, api-resources
    let explained = k.ok(&["explain", "pod.spec.containers"]).await?;
    ensure!(
        explained.contains("containers")
            && explained.contains("DESCRIPTION")
            && explained.contains("List of containers belonging to the pod"),
        "{explained}"
    );
    let resources = k.ok(&["api-resources"]).await?;
    for row in ["deployments", "endpointslices", "leases", "namespaces"] {
        ensure!(
            resources.lines().any(|l| l.starts_with(row)),
            "api-resources lacks {row}: {resources}"
        );
    }
    ensure!(
        resources.lines().any(|l| l.starts_with("deployments")
            && l.contains("deploy")
            && l.contains("apps/v1")
            && l.contains("Deployment")),
        "{resources}"
    );

    // the errors kubectl users know
    let missing = k
        .fails(&["get", "deployment", "nope", "-n", ns], None)
        .await?;
    ensure!(
        missing.contains("Error from server (NotFound): deployments.apps \"nope\" not found"),
        "{missing}"
    );
    let config = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n  namespace: {ns}\n"
    );
    let exists = k.fails(&["create", "-f", "-"], Some(&config)).await?;
    ensure!(
        exists.contains("(AlreadyExists)")
            && exists.contains("configmaps \"web-config\" already exists"),
        "{exists}"
    );
    let stale = run_ns(&["get", "deployment", "web", "-o", "yaml"]).await?;
    k.ok(&["scale", "deployment", "web", "-n", ns, "--replicas=3"])
        .await?;
    let conflict = k.fails(&["replace", "-f", "-"], Some(&stale)).await?;
    ensure!(
        conflict.contains("(Conflict)") && conflict.contains("the object has been modified"),
        "{conflict}"
    );
    let invalid = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n  namespace: {ns}\nspec:\n  replicas: -1\n  selector:\n    matchLabels: {{app: a}}\n  template:\n    metadata:\n      labels: {{app: a}}\n    spec:\n      containers: [{{name: c, image: x}}]\n"
    );
    let refused = k.fails(&["apply", "-f", "-"], Some(&invalid)).await?;
    ensure!(
        refused.contains("The Deployment \"bad\" is invalid")
            && refused.contains("spec.replicas: Invalid value: -1"),
        "{refused}"
    );
    let strict = k
        .fails(&["apply", "-f", "-"], Some(&format!("{config}bogus: 1\n")))
        .await?;
    ensure!(strict.contains("unknown field \"bogus\""), "{strict}");

    // delete --wait
    let removed = k
        .ok(&["delete", "deployment", "web", "-n", ns, "--wait"])
        .await?;
    ensure!(
        removed.contains("deployment.apps \"web\" deleted"),
        "{removed}"
    );
    let none = run_ns(&["get", "deployments"]).await.unwrap_or_default();
    ensure!(!none.contains("web"), "{none}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
async fn kubectl_versions_drive_control() {
    let instance = Instance::new();
    let control = TestControl::start(&instance).await.unwrap();
    let only = std::env::var("CAPSTAN_KUBECTL").ok();
    for binary in kubectl_binaries()
        .unwrap()
        .into_iter()
        .filter(|b| only.as_deref().is_none_or(|o| b.ends_with(o)))
    {
        let version = binary
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "-");
        let kubectl = Kubectl {
            control: &control,
            binary: binary.clone(),
            namespace: format!("ns-{version}"),
        };
        scenario(&kubectl)
            .await
            .unwrap_or_else(|err| panic!("{}: {err:#}", binary.display()));
    }
}
