#![forbid(unsafe_code)]
//! The krew install, with the real krew v0.4.3 and kubectl: the committed manifest is what the
//! release script writes and passes `validate-krew-manifest`; an archive the release script
//! builds installs with `kubectl krew install --manifest --archive` into a scratch `KREW_ROOT`,
//! and `kubectl karpenter version` then runs the installed binary. A tampered archive is refused.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use karpenter_e2e::controlplane::component;
use karpenter_e2e::{binary, repo_root, Scratch};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("command runs")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn release(args: &[&str]) -> Output {
    run(Command::new("bash")
        .arg(repo_root().join(".ci/release.sh"))
        .args(args))
}

fn validate(manifest: &Path) -> Output {
    run(
        Command::new(component("validate-krew-manifest").expect("built"))
            .arg("-manifest")
            .arg(manifest)
            .arg("-skip-install"),
    )
}

/// PATH with kubectl, `kubectl-krew` and `extra` first, and nothing of the workspace's.
fn path_with(bin: &Path, extra: &Path) -> String {
    format!("{}:{}:/usr/bin:/bin", extra.display(), bin.display())
}

#[test]
fn the_committed_manifest_is_the_release_scripts_and_valid() {
    let dir = Scratch::new("krew-manifest").expect("scratch");
    // validate-krew-manifest wants the file named after the plugin.
    let written = dir.0.join("karpenter.yaml");
    ok(
        &release(&["--manifest-only", "--manifest", &written.to_string_lossy()]),
        "release.sh --manifest-only",
    );
    let committed =
        std::fs::read_to_string(repo_root().join("krew-manifest.yaml")).expect("manifest");
    let fresh = std::fs::read_to_string(&written).expect("written");
    assert_eq!(
        committed, fresh,
        "krew-manifest.yaml drifted: run .ci/release.sh --manifest-only"
    );
    let out = validate(&written);
    ok(&out, "validate-krew-manifest");
    for platform in [
        "os: linux",
        "os: darwin",
        "os: windows",
        "arch: arm64",
        "arch: amd64",
    ] {
        assert!(committed.contains(platform), "{platform} missing");
    }
}

#[test]
fn krew_installs_the_release_archive_and_kubectl_runs_it() {
    let dir = Scratch::new("krew-install").expect("scratch");
    let out_dir = dir.0.join("out");
    let manifest = dir.0.join("karpenter.yaml");
    let plugin = binary("kubectl-karpenter").expect("plugin built");
    let given = format!("x86_64-unknown-linux-gnu={}", plugin.display());
    ok(
        &release(&[
            "--manifest-only",
            "--out",
            &out_dir.to_string_lossy(),
            "--manifest",
            &manifest.to_string_lossy(),
            "--binary",
            &given,
        ]),
        "release.sh",
    );
    let archive = out_dir.join("kubectl-karpenter-v0.1.0-x86_64-unknown-linux-gnu.tar.gz");
    assert!(archive.is_file(), "archive built");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let sum = run(Command::new("sha256sum").arg(&archive));
    let sum = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sum.len(), 64);
    assert!(
        text.contains(&format!("sha256: \"{sum}\"")),
        "the archive's sha256 is in the manifest:\n{text}"
    );
    ok(&validate(&manifest), "validate-krew-manifest");

    // `kubectl krew` is krew on PATH as kubectl-krew.
    let tools = dir.0.join("tools");
    std::fs::create_dir_all(&tools).expect("tools dir");
    std::os::unix::fs::symlink(component("krew").expect("krew"), tools.join("kubectl-krew"))
        .expect("symlink");
    let kubectl_dir = component("kubectl")
        .expect("kubectl")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let krew_root = dir.0.join("krew");
    let kubectl = |args: &[&str], path: &str| {
        run(Command::new(component("kubectl").expect("kubectl"))
            .args(args)
            .env("KREW_ROOT", &krew_root)
            .env("PATH", path)
            .env("HOME", &dir.0))
    };

    // A tampered archive fails the sha256 check and installs nothing.
    let bad = dir.0.join("tampered.tar.gz");
    let mut bytes = std::fs::read(&archive).expect("archive");
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&bad, bytes).expect("write");
    let out = kubectl(
        &[
            "krew",
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", bad.display()),
        ],
        &path_with(&kubectl_dir, &tools),
    );
    assert!(!out.status.success(), "a tampered archive must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kubectl(
        &[
            "krew",
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", archive.display()),
        ],
        &path_with(&kubectl_dir, &tools),
    );
    ok(&out, "kubectl krew install");
    let installed = krew_root.join("bin/kubectl-karpenter");
    let target = std::fs::read_link(&installed).expect("krew links the plugin");
    assert!(
        target.starts_with(krew_root.join("store/karpenter/v0.1.0")),
        "{}",
        target.display()
    );
    assert!(
        target.with_file_name("LICENSE").is_file(),
        "LICENSE installed beside the binary"
    );

    // With only krew's bin dir (not the workspace's target dir) on PATH, kubectl finds it.
    let path = path_with(&kubectl_dir, &krew_root.join("bin"));
    let out = kubectl(&["karpenter", "version"], &path);
    ok(&out, "kubectl karpenter version");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kubectl-karpenter 0.1.0"
    );

    // The completion script ships beside the binary; linked into krew's bin dir as the
    // manifest's caveats say, kubectl completes `kubectl karpenter <TAB>` through it.
    let shim = target.with_file_name("kubectl_complete-karpenter");
    assert!(
        shim.is_file(),
        "completion script installed beside the binary"
    );
    std::os::unix::fs::symlink(&shim, krew_root.join("bin/kubectl_complete-karpenter"))
        .expect("link the completion script");
    let out = kubectl(&["__complete", "karpenter", "ex"], &path);
    ok(&out, "kubectl __complete karpenter");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.starts_with("explain")), "{listed}");
}
