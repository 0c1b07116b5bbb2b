#![forbid(unsafe_code)]
//! `kubectl-karpenter validate`, run as a binary against the fixtures in `tests/data`.

mod support;

use serde_json::{json, Value};
use support::{fixture, plugin, plugin_with_stdin, scratch_dir};

const GUIDE_SYNTAX_ERROR: &str =
    "guide.yaml:16:4: YAML syntax error: did not find expected key, while parsing a block mapping at line 8 column 3";
const GUIDE_HINT: &str = "  hint: line 16 is indented by 3 spaces but the mapping it belongs to \
starts at column 7 (the \"key:\" on line 15); align \"operator:\" with \"key:\"";

fn errors(object: &Value) -> Vec<(String, String)> {
    object["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("field"), text("fix"))
        })
        .collect()
}

#[test]
fn guide_provisioner_reports_the_yaml_syntax_error_with_position_and_alignment_hint() {
    let run = plugin(&["validate", "-f", "guide.yaml"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "{GUIDE_SYNTAX_ERROR}\n{GUIDE_HINT}\n1 object checked: 0 valid, 1 invalid, 0 skipped\n"
        )
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn guide_syntax_error_in_json() {
    let run = plugin(&["validate", "-f", "guide.yaml", "-o", "json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let json = run.json();
    assert_eq!(json["valid"], false);
    let object = &json["objects"][0];
    assert_eq!(object["valid"], false);
    assert_eq!(object["object"], Value::Null);
    assert_eq!(object["syntaxError"]["line"], 16);
    assert_eq!(object["syntaxError"]["column"], 4);
    let hint = object["syntaxError"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("align \"operator:\" with \"key:\""), "{hint}");
}

#[test]
fn guide_with_indentation_fixed_reports_misplaced_name_and_leading_space() {
    let run = plugin(&["validate", "-f", "guide-indent-fixed.yaml", "-o", "json"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let json = run.json();
    let object = &json["objects"][0];
    assert_eq!(object["kind"], "Provisioner");
    assert_eq!(object["name"], "default");
    let errors = errors(object);
    let fix_of = |field: &str| {
        errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, fix)| fix.clone())
            .unwrap_or_else(|| panic!("no error for {field}: {errors:?}"))
    };
    assert!(fix_of("name").contains("belongs under metadata"));
    assert!(fix_of("spec.requirements[3].key").contains("\"karpenter.sh/capacity-type\""));

    let text = plugin(&["validate", "-f", "guide-indent-fixed.yaml"]);
    assert_eq!(text.code, Some(1));
    assert!(text
        .stdout
        .starts_with("guide-indent-fixed.yaml (document 1) Provisioner default: invalid\n"));
    assert!(text.stdout.contains(
        "  error: spec.requirements[3].key: \" karpenter.sh/capacity-type\": is not a valid label key"
    ), "{}", text.stdout);
    assert!(text
        .stdout
        .contains("(fix: the key has a leading space; remove it: \"karpenter.sh/capacity-type\")"));
}

#[test]
fn corrected_guide_is_valid_and_defaulting_adds_only_the_os() {
    let run = plugin(&["validate", "-f", "guide-corrected.yaml", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = run.json();
    assert_eq!(json["valid"], true);
    let object = &json["objects"][0];
    assert_eq!(object["errors"], json!([]));
    assert_eq!(
        object["defaulted"],
        json!([{
            "path": "/spec/requirements/-",
            "value": {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            "reason": "kubernetes.io/os In [linux]: no operating system was requested"
        }])
    );
    let keys: Vec<&str> = object["object"]["spec"]["requirements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "node.kubernetes.io/instance-type",
            "topology.kubernetes.io/zone",
            "kubernetes.io/arch",
            "karpenter.sh/capacity-type",
            "kubernetes.io/os"
        ]
    );
}

#[test]
fn corrected_guide_text_output() {
    let run = plugin(&["validate", "-f", "guide-corrected.yaml"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "guide-corrected.yaml (document 1) Provisioner default: valid\n\
         \x20 warning: spec.provider: inline provider settings are deprecated (fix: move them to an AWSNodeTemplate and reference it with spec.providerRef)\n\
         \x20 defaulted: kubernetes.io/os In [linux]: no operating system was requested\n\
         1 object checked: 1 valid, 0 invalid, 0 skipped\n"
    );
    assert!(
        !run.stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn multi_document_file_checks_ours_and_skips_the_deployment() {
    let run = plugin(&["validate", "-f", "multi.yaml"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        lines,
        [
            "multi.yaml (document 1) Provisioner default: valid",
            "multi.yaml (document 2) AWSNodeTemplate default: valid",
            "multi.yaml (document 3) skipped: apps/v1 Deployment inflate (not a Karpenter object)",
            "2 objects checked: 2 valid, 0 invalid, 1 skipped",
        ]
    );

    let json = plugin(&["validate", "-f", "multi.yaml", "-o", "json"]).json();
    assert_eq!(json["objects"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["objects"][1]["kind"], "AWSNodeTemplate");
    assert_eq!(json["objects"][1]["document"], 2);
    assert_eq!(
        json["skipped"],
        json!([{"file": "multi.yaml", "document": 3, "apiVersion": "apps/v1",
                "kind": "Deployment", "name": "inflate"}])
    );
    assert_eq!(json["valid"], true);
}

#[test]
fn unknown_fields_are_reported_with_suggestions() {
    let run = plugin(&["validate", "-f", "unknown-field.yaml"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains(
        "  error: spec.requirements[0].valuse: is not a known field (fix: did you mean \"values\"?)\n"
    ), "{}", run.stdout);
    assert!(run.stdout.contains(
        "  error: spec.ttlSecondAfterEmpty: is not a known field (fix: did you mean \"ttlSecondsAfterEmpty\"?)\n"
    ), "{}", run.stdout);
}

#[test]
fn wrong_api_version_and_lower_case_kind_are_errors_not_skips() {
    let json = plugin(&["validate", "-f", "wrong-api-version.yaml", "-o", "json"]).json();
    assert_eq!(json["skipped"], json!([]));
    assert_eq!(
        errors(&json["objects"][0]),
        [(
            "apiVersion".to_string(),
            "set apiVersion: karpenter.sh/v1alpha5".to_string()
        )]
    );
    assert_eq!(
        errors(&json["objects"][1]),
        [("kind".to_string(), "set kind: Provisioner".to_string())]
    );
    assert_eq!(
        plugin(&["validate", "-f", "wrong-api-version.yaml"]).code,
        Some(1)
    );
}

#[test]
fn list_documents_are_checked_item_by_item() {
    let run = plugin(&["validate", "-f", "list.yaml"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains(
        "list.yaml (document 1, item 1) Provisioner default: invalid\n  error: spec.weight"
    ));
    assert!(run
        .stdout
        .contains("list.yaml (document 1, item 2) AWSNodeTemplate default: valid\n"));
}

#[test]
fn stdin_is_read_with_dash() {
    let run = plugin_with_stdin(
        &["validate", "-f", "-"],
        Some(&fixture("guide-corrected.yaml")),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run
        .stdout
        .starts_with("<stdin> (document 1) Provisioner default: valid\n"));

    let run = plugin_with_stdin(&["validate", "-f", "-"], Some(&fixture("guide.yaml")));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.starts_with("<stdin>:16:4: YAML syntax error:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(GUIDE_HINT));
}

#[test]
fn directories_are_read_sorted_and_recursively_only_with_r() {
    let run = plugin(&["validate", "-f", "dir"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let headers: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        headers,
        [
            "dir/nodetemplate.yml (document 1) AWSNodeTemplate default: valid",
            "dir/provisioner.yaml (document 1) Provisioner default: valid",
            "2 objects checked: 2 valid, 0 invalid, 0 skipped",
        ]
    );

    let run = plugin(&["validate", "-R", "-f", "dir"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run
        .stdout
        .starts_with("dir/nested/unknown-field.yaml (document 1) Provisioner default: invalid\n"));
    assert!(run
        .stdout
        .ends_with("3 objects checked: 2 valid, 1 invalid, 0 skipped\n"));
}

#[test]
fn filenames_repeat_and_split_on_commas() {
    let run = plugin(&[
        "validate",
        "-f",
        "guide-corrected.yaml,multi.yaml",
        "-f",
        "guide.yaml",
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run
        .stdout
        .ends_with("4 objects checked: 3 valid, 1 invalid, 1 skipped\n"));
}

#[test]
fn a_missing_file_is_exit_2_naming_the_file() {
    let run = plugin(&[
        "validate",
        "-f",
        "guide-corrected.yaml",
        "-f",
        "no-such-file.yaml",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: the path \"no-such-file.yaml\" does not exist\n"
    );
}

#[test]
fn an_empty_directory_is_exit_2() {
    let dir = scratch_dir("empty-dir");
    let dir = dir.to_string_lossy();
    let run = plugin(&["validate", "-f", &dir]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(dir.as_ref()), "{}", run.stderr);
    assert!(run.stderr.contains("holds no .yaml, .yml or .json files"));
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["validate"][..],
        &["validate", "-f", "multi.yaml", "-o", "yaml"],
        &["nonsense"],
        &[],
    ] {
        let run = plugin(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[test]
fn help_and_version() {
    let run = plugin(&["validate", "--help"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run
        .stdout
        .contains("Usage: kubectl karpenter validate [OPTIONS] --filename <FILE>"));
    assert!(run.stdout.contains("-f, --filename <FILE>"));
    assert!(run
        .stdout
        .contains("Examples:\n  # Validate a Provisioner before applying it"));

    let version = format!("kubectl-karpenter {}\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(plugin(&["version"]).stdout, version);
    assert_eq!(plugin(&["--version"]).stdout, version);
}

#[test]
fn a_closed_output_pipe_ends_quietly() {
    // The read end is closed before the plugin starts, as after `... | head` has exited.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(support::BIN)
        .args(["validate", "-f", "guide-corrected.yaml"])
        .current_dir(support::data_dir())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the plugin");
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn objects_exported_from_upstream_clusters_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/exported");
    let dir = dir.to_string_lossy().into_owned();
    let run = plugin(&["validate", "-f", &dir, "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = run.json();
    assert_eq!(json["valid"], true);
    assert_eq!(
        json["skipped"],
        json!([]),
        "the README is not read as a manifest"
    );
    let objects = json["objects"].as_array().cloned().unwrap_or_default();
    let named: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            let text = |k: &str| o[k].as_str().unwrap_or_default().to_string();
            (text("kind"), text("name"))
        })
        .collect();
    for expected in [
        ("Provisioner", "legacy"),
        ("Provisioner", "custom-launch-template"),
        ("Provisioner", "batch"),
        ("AWSNodeTemplate", "staging"),
        ("AWSNodeTemplate", "hardened"),
        ("Provisioner", "default"),
        ("Provisioner", "gpu"),
        ("AWSNodeTemplate", "default"),
        ("AWSNodeTemplate", "bottlerocket"),
    ] {
        let expected = (expected.0.to_string(), expected.1.to_string());
        assert!(named.contains(&expected), "{expected:?} not in {named:?}");
    }
    for o in &objects {
        assert_eq!(o["valid"], true, "{o}");
        assert_eq!(o["errors"], json!([]), "{o}");
        let inline = o["object"]["spec"].get("provider").is_some();
        for w in o["warnings"].as_array().into_iter().flatten() {
            assert!(
                inline && w["field"] == "spec.provider",
                "{}: {w}",
                o["name"]
            );
        }
        // Server-set metadata and status are carried through untouched.
        assert!(o["object"]["metadata"]["uid"].is_string(), "{o}");
        assert!(o["object"]["metadata"]["managedFields"].is_array(), "{o}");
    }

    let text = plugin(&["validate", "-f", &dir]);
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(
        text.stdout
            .ends_with("9 objects checked: 9 valid, 0 invalid, 0 skipped\n"),
        "{}",
        text.stdout
    );
}
