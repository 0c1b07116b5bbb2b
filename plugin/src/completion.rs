//! Shell completion: `kubectl karpenter completion bash|zsh|fish` prints a script for the
//! `kubectl-karpenter` command, and the hidden `__complete` answers kubectl's plugin completion
//! (kubectl 1.26+ runs `kubectl_complete-karpenter __complete ARGS... PARTIAL` for
//! `kubectl karpenter <TAB>`, the protocol of Cobra's completion: one candidate per line,
//! optionally `candidate<TAB>description`, then `:<directive>`).

use std::io::Write;

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::source::KubeArgs;
use crate::Status;

/// Examples shown at the end of `completion --help`.
pub const EXAMPLES: &str = "\
Examples:
  # bash, for the current shell and for new ones
  source <(kubectl-karpenter completion bash)
  kubectl-karpenter completion bash > ~/.local/share/bash-completion/completions/kubectl-karpenter

  # zsh and fish
  kubectl-karpenter completion zsh > \"${fpath[1]}/_kubectl-karpenter\"
  kubectl-karpenter completion fish > ~/.config/fish/completions/kubectl-karpenter.fish

`kubectl karpenter <TAB>` (kubectl 1.26+) completes through the kubectl_complete-karpenter
script installed beside the plugin (krew installs it).";

/// Arguments of `completion`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells with a completion script.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionShell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Arguments of the hidden `__complete`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct CompleteArgs {
    /// The words after `kubectl karpenter`, the last being the one to complete (maybe empty).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// Runs `completion`.
pub fn run(args: &CompletionArgs, stdout: &mut dyn Write) -> Result<Status> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kubectl-karpenter", &mut buf);
    stdout.write_all(&buf).map_err(Error::Write)?;
    Ok(Status::Success)
}

/// Cobra's directives.
const NO_SPACE: u8 = 2;
const NO_FILE_COMP: u8 = 4;
const DEFAULT: u8 = 0;

/// Candidates for the words, and the directive.
pub fn candidates(words: &[String], live: &dyn Fn(&str) -> Vec<String>) -> (Vec<String>, u8) {
    let (partial, before) = match words.split_last() {
        Some((p, b)) => (p.as_str(), b),
        None => ("", &[][..]),
    };
    let root = Cli::command();
    let sub = before
        .iter()
        .find(|w| !w.starts_with('-'))
        .and_then(|w| root.find_subcommand(w));
    let Some(sub) = sub else {
        let names = root
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name().starts_with(partial))
            .map(|c| {
                let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
                format!("{}\t{about}", c.get_name())
            })
            .collect();
        return (names, NO_FILE_COMP);
    };
    // The value of the flag before the partial word.
    if let Some(prev) = before.last().filter(|w| w.starts_with('-')) {
        let flag = prev.trim_start_matches('-');
        let arg = sub.get_arguments().find(|a| {
            a.get_long() == Some(flag)
                || a.get_short()
                    .is_some_and(|s| flag.len() == 1 && flag.starts_with(s))
        });
        if let Some(arg) = arg.filter(|a| a.get_action().takes_values()) {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .filter(|v| v.starts_with(partial))
                .collect();
            if !values.is_empty() {
                return (values, NO_FILE_COMP);
            }
            return match arg.get_id().as_str() {
                "filenames" | "instance_types" | "kubeconfig" => (Vec::new(), DEFAULT),
                _ => (Vec::new(), NO_FILE_COMP),
            };
        }
    }
    if partial.starts_with('-') {
        let flags = sub
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .filter(|f| f.starts_with(partial))
            .collect();
        return (flags, NO_FILE_COMP);
    }
    if sub.get_name() == "explain" {
        let positional = before
            .iter()
            .skip_while(|w| *w != "explain")
            .skip(1)
            .filter(|w| !w.starts_with('-'))
            .count();
        if positional == 0 {
            if let Some((kind, name)) = partial.split_once('/') {
                let names = live(kind)
                    .into_iter()
                    .filter(|n| n.starts_with(name))
                    .map(|n| format!("{kind}/{n}"))
                    .collect();
                return (names, NO_FILE_COMP);
            }
            let kinds = ["pod/", "node/", "provisioner/"]
                .iter()
                .filter(|k| k.starts_with(partial))
                .map(|k| k.to_string())
                .collect();
            return (kinds, NO_FILE_COMP | NO_SPACE);
        }
    }
    (Vec::new(), NO_FILE_COMP)
}

/// Names of live objects of a kind for `explain KIND/<TAB>`, read with a short timeout; none
/// when the cluster cannot be read.
fn live_names(words: &[String], kind: &str) -> Vec<String> {
    let kube = KubeArgs {
        request_timeout: "5s".into(),
        kubeconfig: flag_value(words, "--kubeconfig").map(Into::into),
        context: flag_value(words, "--context"),
        namespace: flag_value(words, "--namespace").or_else(|| flag_value(words, "-n")),
        ..Default::default()
    };
    let Ok((docs, namespace, _)) = crate::source::read_live(&kube) else {
        return Vec::new();
    };
    let want = match kind {
        "pod" | "pods" | "po" => "Pod",
        "node" | "nodes" | "no" => "Node",
        "provisioner" | "provisioners" => "Provisioner",
        _ => return Vec::new(),
    };
    let mut names: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == want)
        .filter(|d| {
            want != "Pod"
                || d.pointer("/metadata/namespace").and_then(|n| n.as_str())
                    == Some(namespace.as_str())
        })
        .filter_map(|d| {
            d.pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn flag_value(words: &[String], flag: &str) -> Option<String> {
    let i = words.iter().position(|w| w == flag)?;
    words.get(i + 1).cloned()
}

/// Runs `__complete`.
pub fn complete(args: &CompleteArgs, stdout: &mut dyn Write) -> Result<Status> {
    let words = args.words.clone();
    let (list, directive) = candidates(&words, &|kind| live_names(&words, kind));
    for c in list {
        writeln!(stdout, "{c}").map_err(Error::Write)?;
    }
    writeln!(stdout, ":{directive}").map_err(Error::Write)?;
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    fn none(_: &str) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn subcommands_complete_with_descriptions_and_hidden_ones_stay_hidden() {
        let (c, d) = candidates(&words(&["ex"]), &none);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].starts_with("explain\t"), "{c:?}");
        assert_eq!(d, NO_FILE_COMP);
        let (all, _) = candidates(&words(&[""]), &none);
        assert!(all.iter().any(|c| c.starts_with("nodes\t")));
        assert!(!all.iter().any(|c| c.starts_with("__complete")));
    }

    #[test]
    fn explain_completes_kinds_then_live_names() {
        let (c, d) = candidates(&words(&["explain", "p"]), &none);
        assert_eq!(c, ["pod/", "provisioner/"]);
        assert_eq!(d, NO_FILE_COMP | NO_SPACE);
        let live = |kind: &str| {
            assert_eq!(kind, "pod");
            vec!["inflate-1".to_string(), "web-0".to_string()]
        };
        let (c, _) = candidates(&words(&["explain", "pod/in"]), &live);
        assert_eq!(c, ["pod/inflate-1"]);
    }

    #[test]
    fn flag_values_and_flags() {
        let (c, _) = candidates(&words(&["nodes", "-o", "w"]), &none);
        assert_eq!(c, ["wide"]);
        let (c, _) = candidates(&words(&["explain", "--con"]), &none);
        assert_eq!(c, ["--context"]);
        // -f takes files: the shell's own file completion.
        let (c, d) = candidates(&words(&["nodes", "-f", ""]), &none);
        assert!(c.is_empty());
        assert_eq!(d, DEFAULT);
    }
}
