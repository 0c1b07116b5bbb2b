//! The plugin's error type: problems that stop a command before it can report on objects
//! (missing files, unreadable input, a closed stdout). Problems *in* the manifests are not
//! errors here; they are findings in the command's report.

use std::io;
use std::path::PathBuf;

/// Why a command could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `-f` path does not exist.
    #[error("the path \"{}\" does not exist", .0.display())]
    NotFound(PathBuf),

    /// A file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },

    /// A directory could not be listed.
    #[error("failed to list the directory {}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },

    /// A directory given with `-f` holds no manifest files.
    #[error(
        "the directory {} holds no .yaml, .yml or .json files{}",
        path.display(),
        if *.recursive { "" } else { " (use -R to include its sub-directories)" }
    )]
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
        /// Whether sub-directories were searched too.
        recursive: bool,
    },

    /// Standard input could not be read.
    #[error("failed to read standard input")]
    ReadStdin(#[source] io::Error),

    /// `-f -` was given more than once.
    #[error("standard input (-f -) can be given only once")]
    StdinTwice,

    /// The report could not be written to standard output.
    #[error("failed to write the output")]
    Write(#[source] io::Error),

    /// A flag's value is wrong; the message says how to write it.
    #[error("{0}")]
    Usage(String),

    /// An instance-type catalog could not be used.
    #[error("{path}: {message}")]
    Catalog {
        /// The catalog file (or the built-in catalog).
        path: String,
        /// What is wrong.
        message: String,
    },

    /// The packing engine could not run on the input.
    #[error("simulation failed: {0}")]
    Simulate(String),

    /// The kubeconfig could not be read or used.
    #[error("{what}: {message}")]
    Kubeconfig {
        /// What was being done.
        what: String,
        /// The underlying problem.
        message: String,
    },

    /// The cluster could not be reached or refused a request.
    #[error("{what}: {message}")]
    Cluster {
        /// What was being done.
        what: String,
        /// The underlying problem.
        message: String,
    },

    /// A file given with `-f` is not valid YAML or JSON.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        /// The file.
        file: String,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong, with a hint.
        message: String,
    },

    /// The object to explain does not exist (exit status 1, as kubectl's `NotFound`).
    #[error("{kind} \"{name}\" not found{where_}")]
    ObjectNotFound {
        /// The kind, as kubectl names it (`pods`, `nodes`, `provisioners`).
        kind: String,
        /// The name asked for.
        name: String,
        /// Where it was looked for (` in namespace "x"`, ` in the files`), or empty.
        where_: String,
    },

    /// The report could not be serialized as JSON.
    #[error("failed to serialize the report as JSON")]
    Json(#[source] serde_json::Error),
}

/// A result with the plugin's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
