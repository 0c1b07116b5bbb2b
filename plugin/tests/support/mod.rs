//! Running the built plugin, directly or through `kubectl`, from the fixtures directory.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The built `kubectl-karpenter` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-karpenter");

/// `plugin/tests/data`: the fixtures; commands run here so file names print short.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubectl-karpenter-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// What a run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not one JSON document ({e}):\n{}", self.stdout),
        }
    }
}

/// Runs `command` in the fixtures directory with `stdin` (empty when `None`), without colour
/// settings or a kubeconfig from the environment.
pub fn run(mut command: Command, stdin: Option<&str>) -> Run {
    // An empty HOME: no ~/.kube/config, so nothing can reach a cluster.
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubectl-karpenter-empty-home");
    if let Err(e) = std::fs::create_dir_all(&home) {
        panic!("cannot create {}: {e}", home.display());
    }
    command
        .current_dir(data_dir())
        .env_remove("NO_COLOR")
        .env_remove("KUBECONFIG")
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run {command:?}: {e}"),
    };
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            if let Err(e) = pipe.write_all(text.as_bytes()) {
                panic!("cannot write stdin: {e}");
            }
        }
    }
    match child.wait_with_output() {
        Ok(output) => Run::from_output(output),
        Err(e) => panic!("{command:?} failed: {e}"),
    }
}

/// Runs the plugin binary directly.
pub fn plugin(args: &[&str]) -> Run {
    plugin_with_stdin(args, None)
}

/// Runs the plugin binary directly, feeding `stdin`.
pub fn plugin_with_stdin(args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(BIN);
    command.args(args);
    run(command, stdin)
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = data_dir().join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}
