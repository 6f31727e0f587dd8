//! `sshlab-agent k8s-job`: a Kubernetes Indexed Job that runs one test split across N agents.
//!
//! `completionMode: Indexed` with `completions` = `parallelism` = N: pod I has completion index
//! I (the annotation `batch.kubernetes.io/job-completion-index`, also `JOB_COMPLETION_INDEX`),
//! which becomes `--segment I/N`. Every pod runs with the same
//! `--test-id` and `--start-at`, so the segments start together and `sshlab-agent merge`
//! recognises them; each writes `<test-id>-s<I>of<N>/` to the results volume.
//!
//! The manifest is YAML whose scalars are JSON-quoted (YAML 1.2 reads JSON strings as they
//! are), so no value can break out of its place.

use std::fmt::Write as _;

/// What the Job needs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Agents (segments).
    pub segments: u32,
    /// The container image holding `sshlab-agent`.
    pub image: String,
    /// The PersistentVolumeClaim mounted at `/results`.
    pub results_claim: String,
    /// The test's id, shared by the pods.
    pub test_id: String,
    /// Unix time the pods start the test at.
    pub start_at: u64,
    /// `sshlab-agent run` flags for every pod (the MCP URL, the scenario, the total rate and
    /// workers: each pod takes its share).
    pub run_args: Vec<String>,
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A Kubernetes object name from the test id: lowercase letters, digits and `-`.
fn object_name(test_id: &str) -> String {
    let mut name: String = test_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(52);
    let name = name.trim_matches('-');
    format!("sshlab-{}", if name.is_empty() { "test" } else { name })
}

/// The Job manifest.
pub fn manifest(spec: &JobSpec) -> String {
    let n = spec.segments;
    let mut args = vec![
        "run".to_owned(),
        "--segment".to_owned(),
        format!("$(SSHLAB_SEGMENT_INDEX)/{n}"),
        "--test-id".to_owned(),
        spec.test_id.clone(),
        "--start-at".to_owned(),
        spec.start_at.to_string(),
        "--results-dir".to_owned(),
        "/results".to_owned(),
        "--quiet".to_owned(),
    ];
    args.extend(spec.run_args.iter().cloned());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# sshlab-agent k8s-job: one test split across {n} agents (an Indexed Job).\n\
         # Pod I runs --segment I/{n}; all start at unix time {} with test id {}.\n\
         # Afterwards: sshlab-agent merge /results/{}-s*of{n} --out <dir>",
        spec.start_at, spec.test_id, spec.test_id
    );
    let _ = writeln!(out, "apiVersion: batch/v1");
    let _ = writeln!(out, "kind: Job");
    let _ = writeln!(out, "metadata:");
    let _ = writeln!(out, "  name: {}", q(&object_name(&spec.test_id)));
    let _ = writeln!(out, "  labels:");
    let _ = writeln!(out, "    app.kubernetes.io/name: \"sshlab-agent\"");
    let _ = writeln!(out, "spec:");
    let _ = writeln!(out, "  completionMode: Indexed");
    let _ = writeln!(out, "  completions: {n}");
    let _ = writeln!(out, "  parallelism: {n}");
    // A failed segment is not retried: a late rerun would measure another moment.
    let _ = writeln!(out, "  backoffLimit: 0");
    let _ = writeln!(out, "  template:");
    let _ = writeln!(out, "    metadata:");
    let _ = writeln!(out, "      labels:");
    let _ = writeln!(out, "        app.kubernetes.io/name: \"sshlab-agent\"");
    let _ = writeln!(out, "    spec:");
    let _ = writeln!(out, "      restartPolicy: Never");
    let _ = writeln!(out, "      containers:");
    let _ = writeln!(out, "        - name: agent");
    let _ = writeln!(out, "          image: {}", q(&spec.image));
    let _ = writeln!(out, "          command: [\"sshlab-agent\"]");
    let _ = writeln!(out, "          args:");
    for a in &args {
        let _ = writeln!(out, "            - {}", q(a));
    }
    let _ = writeln!(out, "          env:");
    // The completion index from the pod's annotation (the Job controller also sets it as
    // JOB_COMPLETION_INDEX; a name of our own does not shadow that one).
    let _ = writeln!(out, "            - name: SSHLAB_SEGMENT_INDEX");
    let _ = writeln!(out, "              valueFrom:");
    let _ = writeln!(out, "                fieldRef:");
    let _ = writeln!(
        out,
        "                  fieldPath: \"metadata.annotations['batch.kubernetes.io/job-completion-index']\""
    );
    let _ = writeln!(out, "          volumeMounts:");
    let _ = writeln!(out, "            - name: results");
    let _ = writeln!(out, "              mountPath: /results");
    let _ = writeln!(out, "      volumes:");
    let _ = writeln!(out, "        - name: results");
    let _ = writeln!(out, "          persistentVolumeClaim:");
    let _ = writeln!(out, "            claimName: {}", q(&spec.results_claim));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quoting() {
        assert_eq!(
            object_name("loadtest_20261129_101500"),
            "sshlab-loadtest-20261129-101500"
        );
        assert_eq!(object_name("__"), "sshlab-test");
        let m = manifest(&JobSpec {
            segments: 3,
            image: "reg.example/sshlab:1".into(),
            results_claim: "results".into(),
            test_id: "t1".into(),
            start_at: 1_900_000_000,
            run_args: vec![
                "--rate".into(),
                "300".into(),
                "--mcp-url".into(),
                "x\"y".into(),
            ],
        });
        assert!(m.contains("completionMode: Indexed") && m.contains("parallelism: 3"));
        assert!(m.contains(r#"- "$(SSHLAB_SEGMENT_INDEX)/3""#), "{m}");
        assert!(m.contains(r#"- "x\"y""#), "{m}");
    }
}
