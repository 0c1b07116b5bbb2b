//! A real Kubernetes control plane for tests: etcd and kube-apiserver on 127.0.0.1, optionally
//! kube-controller-manager, kube-scheduler and kwok, all built from their Go modules by
//! `tests/controlplane/build.sh` (the harness runs it, and it does nothing when the binaries are
//! cached).
//!
//! ```no_run
//! use karpenter_e2e::controlplane::{ControlPlane, Options};
//! let cp = ControlPlane::shared(Options::default().scheduler().controller_manager());
//! let ns = cp.namespace("demo").expect("namespace");
//! cp.kubectl_ok(&["-n", &ns.name, "create", "deployment", "web", "--image=pause"])
//!     .expect("kubectl");
//! ```
//!
//! Every child runs under a small supervisor that kills it when this process goes away, however
//! it goes (a panic, `kill -9`, a shared control plane that is never dropped), and each child's
//! log is kept in the control plane's scratch folder and printed when a test fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};

use crate::{io, repo_root, E2eError};

/// Which components to run beside etcd and kube-apiserver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// kube-controller-manager: Deployments to ReplicaSets to Pods, PDB status, garbage
    /// collection, namespace deletion, ServiceAccounts.
    pub controller_manager: bool,
    /// kube-scheduler: marks pods `PodScheduled=False/Unschedulable`, and binds.
    pub scheduler: bool,
    /// kwok: the kubelet of every Node labelled `type=kwok` (Ready nodes, Running pods,
    /// deleted pods removed).
    pub kwok: bool,
    /// Installs `manifests/crds/` and waits until they are served (on by default).
    pub skip_crds: bool,
    /// Extra kube-scheduler profiles (a YAML list of `KubeSchedulerConfiguration` profiles),
    /// served beside `default-scheduler`.
    pub scheduler_profiles: Option<String>,
}

// === impl Options ===

impl Options {
    /// Adds kube-controller-manager.
    pub fn controller_manager(mut self) -> Self {
        self.controller_manager = true;
        self
    }
    /// Adds kube-scheduler.
    pub fn scheduler(mut self) -> Self {
        self.scheduler = true;
        self
    }
    /// Adds kwok.
    pub fn kwok(mut self) -> Self {
        self.kwok = true;
        self
    }
    /// Does not install our CRDs.
    pub fn without_crds(mut self) -> Self {
        self.skip_crds = true;
        self
    }
    /// Adds kube-scheduler with extra profiles (a YAML list) beside `default-scheduler`.
    pub fn scheduler_profiles(mut self, profiles_yaml: &str) -> Self {
        self.scheduler = true;
        self.scheduler_profiles = Some(profiles_yaml.to_string());
        self
    }
}

/// The label that puts a Node under kwok's management.
pub const KWOK_NODE_LABEL: (&str, &str) = ("type", "kwok");

/// The folder holding every component binary (the last line `build.sh` prints), built once per
/// process. `$KARPENTER_TEST_BIN_DIR` skips the script.
pub fn component_dir() -> Result<PathBuf, E2eError> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("KARPENTER_TEST_BIN_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let script = repo_root().join("tests/controlplane/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--print-dir")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match (out.status.success(), stdout.lines().last()) {
            (true, Some(dir)) => Ok(PathBuf::from(dir.trim())),
            _ => Err(format!(
                "{} failed ({}); it needs Go 1.26 and the Go module proxy",
                script.display(),
                out.status
            )),
        }
    })
    .clone()
    .map_err(E2eError::Components)
}

/// The path of one component binary (`kubectl`, `kube-apiserver`, `helm`, `krew`, ...).
pub fn component(name: &str) -> Result<PathBuf, E2eError> {
    let path = component_dir()?.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(E2eError::MissingBinary(path))
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16, E2eError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("find a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io("read a local address"))
}

/// A child process that dies with the test process.
///
/// It runs under `bash`, which reads its standard input from us: when that pipe closes (on
/// drop, or because this process ended in any way) the supervisor kills the child.
pub struct Supervised {
    /// The component's name, for messages.
    pub name: String,
    /// Its combined standard output and error.
    pub log: PathBuf,
    bash: Child,
    stdin: Option<ChildStdin>,
}

const SUPERVISOR: &str = r#"
log=$1; shift
"$@" </dev/null >>"$log" 2>&1 &
child=$!
echo "$child" > "$log.pid"
stop() {
  kill -TERM "$child" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || exit 0; sleep 0.3; done
  kill -KILL "$child" 2>/dev/null
  exit 0
}
# Signals to the supervisor (a Ctrl-C, a timeout killing the process group) stop the child too.
trap stop TERM INT HUP
# Wait for our parent to close stdin (or die), then stop the child.
# (A background job's stdin is /dev/null unless redirected, hence `<&0`.)
cat <&0 >/dev/null &
wait $!
stop
"#;

// === impl Supervised ===

impl Supervised {
    /// Starts `program` with `args` and `env`, logging to `dir/<name>.log`.
    pub fn spawn(
        name: &str,
        dir: &Path,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Self, E2eError> {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("supervise")
            .arg(&log)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut bash = cmd.spawn().map_err(io(format!("start {name}")))?;
        let stdin = bash.stdin.take();
        Ok(Supervised {
            name: name.to_string(),
            log,
            bash,
            stdin,
        })
    }

    /// The child's process id, once the supervisor has started it.
    pub fn pid(&self) -> Option<u32> {
        let file = self.log.with_extension("log.pid");
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Whether the child is still running.
    pub fn running(&self) -> bool {
        match self.pid() {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid),
            None => true,
        }
    }

    /// Kills the child with SIGKILL at once (as `kill -9` would).
    pub fn kill9(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// The last `lines` lines of the child's log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the child (SIGTERM, then SIGKILL after 3 s) and waits for the supervisor.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.bash.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        let _ = self.bash.kill();
        let _ = self.bash.wait();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The control plane's certificate authorities and keys.
pub struct Pki {
    /// The serving CA (trusted by clients), PEM.
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    /// The apiserver's serving certificate and key, PEM.
    pub serving: (String, String),
    client_ca: Issuer<'static, KeyPair>,
    /// The client CA certificate, PEM.
    pub client_ca_pem: String,
    /// The ServiceAccount token signing key, PEM.
    pub sa_key_pem: String,
    /// Its public key, PEM.
    pub sa_pub_pem: String,
}

fn tls(e: rcgen::Error) -> E2eError {
    E2eError::Tls(e.to_string())
}

fn new_ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>), E2eError> {
    let key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

// === impl Pki ===

impl Pki {
    /// New CAs, a serving certificate for 127.0.0.1 and the in-cluster names, and an SA key.
    pub fn new() -> Result<Self, E2eError> {
        let (ca_pem, ca) = new_ca("karpenter-e2e-ca")?;
        let (client_ca_pem, client_ca) = new_ca("karpenter-e2e-client-ca")?;
        let names = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.0.0.1",
        ];
        let key = KeyPair::generate().map_err(tls)?;
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(tls)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).map_err(tls)?;
        let sa = KeyPair::generate().map_err(tls)?;
        Ok(Pki {
            ca_pem,
            ca,
            serving: (cert.pem(), key.serialize_pem()),
            client_ca,
            client_ca_pem,
            sa_key_pem: sa.serialize_pem(),
            sa_pub_pem: sa.public_key_pem(),
        })
    }

    /// A client certificate and key for `user` in `groups`, signed by the client CA.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String), E2eError> {
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.client_ca).map_err(tls)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A serving certificate for `names` signed by the serving CA (for webhooks the apiserver
    /// calls).
    pub fn serving_cert(&self, names: &[&str]) -> Result<(String, String), E2eError> {
        let key = KeyPair::generate().map_err(tls)?;
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(tls)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca).map_err(tls)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig document for `server` with either a client certificate or a bearer token.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, auth: &KubeAuth) -> String {
    let cred = match auth {
        KubeAuth::Cert { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
        KubeAuth::Token(t) => format!("    token: {t}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\ncontexts:\n- name: {user}@e2e\n  context:\n    cluster: e2e\n    \
         user: {user}\n    namespace: default\ncurrent-context: {user}@e2e\nusers:\n- name: {user}\n  user:\n{cred}",
        ca = b64(ca_pem),
    )
}

/// How a kubeconfig authenticates.
pub enum KubeAuth {
    /// A client certificate and its key, PEM.
    Cert {
        /// Certificate, PEM.
        cert_pem: String,
        /// Key, PEM.
        key_pem: String,
    },
    /// A bearer token.
    Token(String),
}

/// A running control plane; every child is stopped on drop.
pub struct ControlPlane {
    /// Scratch folder: certificates, kubeconfigs, etcd data, logs.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The admin kubeconfig (user `admin` in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Certificates and keys.
    pub pki: Pki,
    /// What runs.
    pub options: Options,
    /// Time from the first process start to apiserver ready (and CRDs served).
    pub startup: Duration,
    procs: Mutex<Vec<Supervised>>,
    minted: Mutex<u32>,
}

fn unique_dir(tag: &str) -> Result<PathBuf, E2eError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "karpenter-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    ));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    Ok(dir)
}

fn write(path: &Path, contents: &str) -> Result<(), E2eError> {
    std::fs::write(path, contents).map_err(io(format!("write {}", path.display())))
}

// === impl ControlPlane ===

impl ControlPlane {
    /// The control plane shared by every test of this test binary (started by the first caller
    /// with its options; later callers must ask for a subset of them). Panics with the logs when
    /// it cannot start.
    pub fn shared(options: Options) -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        let cp =
            SHARED.get_or_init(|| ControlPlane::start(options.clone()).map_err(|e| e.to_string()));
        match cp {
            Ok(cp) => {
                let o = &cp.options;
                assert!(
                    (!options.controller_manager || o.controller_manager)
                        && (!options.scheduler || o.scheduler)
                        && (!options.kwok || o.kwok)
                        && (options.scheduler_profiles.is_none()
                            || options.scheduler_profiles == o.scheduler_profiles),
                    "the shared control plane was started with {o:?}, not {options:?}"
                );
                cp
            }
            Err(e) => panic!("control plane did not start: {e}"),
        }
    }

    /// Starts etcd and kube-apiserver (and what `options` asks for), waits for `/readyz`, and
    /// installs the CRDs.
    pub fn start(options: Options) -> Result<Self, E2eError> {
        let bins = component_dir()?;
        let dir = unique_dir("controlplane")?;
        let started = Instant::now();
        let pki = Pki::new()?;
        let p = |n: &str| dir.join(n);
        write(&p("ca.crt"), &pki.ca_pem)?;
        write(&p("client-ca.crt"), &pki.client_ca_pem)?;
        write(&p("apiserver.crt"), &pki.serving.0)?;
        write(&p("apiserver.key"), &pki.serving.1)?;
        write(&p("sa.key"), &pki.sa_key_pem)?;
        write(&p("sa.pub"), &pki.sa_pub_pem)?;

        let mut procs = Vec::new();
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let s = |v: &str| v.to_string();
        procs.push(Supervised::spawn(
            "etcd",
            &dir,
            &bins.join("etcd"),
            &[
                s("--name=e2e"),
                format!("--data-dir={}", p("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                s("--unsafe-no-fsync"),
                s("--log-level=warn"),
            ],
            &[],
        )?);
        let server = format!("https://127.0.0.1:{api_port}");
        procs.push(Supervised::spawn(
            "kube-apiserver",
            &dir,
            &bins.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt").display()),
                format!("--tls-private-key-file={}", p("apiserver.key").display()),
                format!("--client-ca-file={}", p("client-ca.crt").display()),
                format!("--service-account-key-file={}", p("sa.pub").display()),
                format!("--service-account-signing-key-file={}", p("sa.key").display()),
                s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
                s("--service-cluster-ip-range=10.0.0.0/24"),
                s("--authorization-mode=RBAC"),
                s("--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,ResourceQuota"),
                s("--allow-privileged=true"),
                s("--profiling=false"),
                s("--v=1"),
            ],
            &[],
        )?);
        let admin = pki.client_cert("admin", &["system:masters"])?;
        let kubeconfig = p("admin.kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(
                &server,
                &pki.ca_pem,
                "admin",
                &KubeAuth::Cert {
                    cert_pem: admin.0,
                    key_pem: admin.1,
                },
            ),
        )?;
        let cp = ControlPlane {
            dir: dir.clone(),
            server,
            kubeconfig,
            pki,
            options: options.clone(),
            startup: Duration::ZERO,
            procs: Mutex::new(procs),
            minted: Mutex::new(0),
        };
        cp.wait_ready(Duration::from_secs(90))?;
        let mut cp = cp;

        if options.controller_manager {
            let mut args = cp.component_args("system:kube-controller-manager")?;
            args.extend([
                format!(
                    "--service-account-private-key-file={}",
                    p("sa.key").display()
                ),
                format!("--root-ca-file={}", p("ca.crt").display()),
                s("--use-service-account-credentials=true"),
                s("--concurrent-deployment-syncs=5"),
                // Client-side rate limits sized for tests that create a few hundred nodes at
                // once: the node lifecycle controller patches each one's taints.
                s("--kube-api-qps=200"),
                s("--kube-api-burst=400"),
            ]);
            cp.spawn(
                "kube-controller-manager",
                &bins.join("kube-controller-manager"),
                &args,
            )?;
        }
        if options.scheduler {
            let mut args = cp.component_args("system:kube-scheduler")?;
            if let Some(profiles) = &options.scheduler_profiles {
                // With --config, the file holds the client connection and leader election.
                let kc = args
                    .iter()
                    .find_map(|a| a.strip_prefix("--kubeconfig="))
                    .unwrap_or_default()
                    .to_string();
                args.retain(|a| {
                    !a.starts_with("--kubeconfig=") && !a.starts_with("--leader-elect")
                });
                let mut config = format!(
                    "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
                     clientConnection:\n  kubeconfig: {kc}\nleaderElection:\n  leaderElect: false\n\
                     profiles:\n- schedulerName: default-scheduler\n"
                );
                config.push_str(profiles);
                let file = cp.dir.join("kube-scheduler-config.yaml");
                write(&file, &config)?;
                args.push(format!("--config={}", file.display()));
            }
            cp.spawn("kube-scheduler", &bins.join("kube-scheduler"), &args)?;
        }
        if options.kwok {
            let stages = repo_root().join("tests/controlplane/kwok-stages.yaml");
            let kc = cp.kubeconfig.clone();
            cp.spawn(
                "kwok",
                &bins.join("kwok"),
                &[
                    format!("--kubeconfig={}", kc.display()),
                    format!("--config={}", stages.display()),
                    s("--manage-all-nodes=false"),
                    format!(
                        "--manage-nodes-with-label-selector={}={}",
                        KWOK_NODE_LABEL.0, KWOK_NODE_LABEL.1
                    ),
                    s("--node-lease-duration-seconds=40"),
                    format!("--server-address=127.0.0.1:{}", free_port()?),
                    s("--cidr=10.244.0.0/16"),
                    s("--node-ip=127.0.0.1"),
                ],
            )?;
        }
        if !options.skip_crds {
            cp.install_crds()?;
        }
        cp.startup = started.elapsed();
        eprintln!(
            "control plane (etcd, kube-apiserver{}{}) ready at {} in {:.1} s; logs in {}",
            if options.controller_manager {
                ", kube-controller-manager"
            } else {
                ""
            },
            match (options.scheduler, options.kwok) {
                (true, true) => ", kube-scheduler, kwok",
                (true, false) => ", kube-scheduler",
                (false, true) => ", kwok",
                (false, false) => "",
            },
            cp.server,
            cp.startup.as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    /// Starts another program (e.g. `karpenter-controller`) supervised like the components:
    /// stopped with the control plane, its log kept as `dir/<name>.log`.
    pub fn start_component(
        &self,
        name: &str,
        program: &Path,
        args: &[&str],
    ) -> Result<(), E2eError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.spawn(name, program, &args)
    }

    /// Starts a supervised process with extra environment variables (e.g. credentials).
    pub fn start_component_with_env(
        &self,
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), E2eError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let child = Supervised::spawn(name, &self.dir, program, &args, env)?;
        if let Ok(mut procs) = self.procs.lock() {
            procs.push(child);
        }
        Ok(())
    }

    /// The process id of a supervised component, while it runs.
    pub fn component_pid(&self, name: &str) -> Option<u32> {
        self.procs
            .lock()
            .ok()?
            .iter()
            .find(|p| p.name == name)?
            .pid()
    }

    /// Kills one supervised component with SIGKILL at once (no clean-up runs), then reaps it.
    pub fn kill9_component(&self, name: &str) {
        if let Ok(mut procs) = self.procs.lock() {
            if let Some(i) = procs.iter().position(|p| p.name == name) {
                let mut p = procs.remove(i);
                p.kill9();
                p.stop();
            }
        }
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<(), E2eError> {
        let child = Supervised::spawn(name, &self.dir, program, args, &[])?;
        if let Ok(mut procs) = self.procs.lock() {
            procs.push(child);
        }
        Ok(())
    }

    /// The flags kube-controller-manager and kube-scheduler share: their own client
    /// certificate identity, no leader election, serving on a free loopback port.
    fn component_args(&self, user: &str) -> Result<Vec<String>, E2eError> {
        let kc = self.component_kubeconfig(user, &[])?.display().to_string();
        Ok(vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--leader-elect=false".to_string(),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", free_port()?),
            "--v=1".to_string(),
        ])
    }

    /// Writes a kubeconfig for a component identity (client certificate).
    fn component_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, E2eError> {
        let (cert_pem, key_pem) = self.pki.client_cert(user, groups)?;
        let file = self
            .dir
            .join(format!("{}.kubeconfig", user.replace(':', "-")));
        write(
            &file,
            &kubeconfig_yaml(
                &self.server,
                &self.pki.ca_pem,
                user,
                &KubeAuth::Cert { cert_pem, key_pem },
            ),
        )?;
        Ok(file)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), E2eError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(&["get", "--raw=/readyz", "--request-timeout=5s"])?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            let dead = self.dead_components();
            if !dead.is_empty() || Instant::now() > deadline {
                return Err(E2eError::NotStarted(format!(
                    "kube-apiserver not ready ({}):\n{}",
                    if dead.is_empty() {
                        "timed out".to_string()
                    } else {
                        format!("{} exited", dead.join(", "))
                    },
                    self.logs(40)
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Applies `manifests/crds/` and waits until every CRD is Established and served.
    pub fn install_crds(&self) -> Result<(), E2eError> {
        let crds = repo_root().join("manifests/crds");
        let crds = crds.to_string_lossy();
        self.kubectl_ok(&["apply", "--server-side", "-f", &crds])?;
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &crds,
        ])?;
        // Established means the storage is ready; discovery can lag a moment behind.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl(&["get", "provisioners,awsnodetemplates"])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(E2eError::Command(format!(
                    "CRDs not served: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the real `karpenter-webhook` (with a certificate from this control plane's CA for
    /// 127.0.0.1, `--kubeconfig` set to the admin's, and `extra` flags), supervised like the
    /// other components, and returns its HTTPS address once it listens.
    pub fn start_webhook(&self, name: &str, extra: &[&str]) -> Result<WebhookProcess, E2eError> {
        self.start_webhook_as(name, &self.kubeconfig, extra)
    }

    /// Like [`ControlPlane::start_webhook`], with the cluster credentials of `kubeconfig`
    /// (e.g. a ServiceAccount's from [`ControlPlane::service_account_kubeconfig`]).
    pub fn start_webhook_as(
        &self,
        name: &str,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<WebhookProcess, E2eError> {
        let (cert, key) = self.pki.serving_cert(&["127.0.0.1", "localhost"])?;
        let cert_file = self.dir.join(format!("{name}.crt"));
        let key_file = self.dir.join(format!("{name}.key"));
        write(&cert_file, &cert)?;
        write(&key_file, &key)?;
        let mut args = vec![
            format!("--tls-cert-file={}", cert_file.display()),
            format!("--tls-key-file={}", key_file.display()),
            "--listen=127.0.0.1:0".to_string(),
            "--admin-listen=127.0.0.1:0".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--log-level=info".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Supervised::spawn(
            name,
            &self.dir,
            &crate::binary("karpenter-webhook")?,
            &args,
            &[],
        )?;
        let log = child.log.clone();
        if let Ok(mut procs) = self.procs.lock() {
            procs.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = text
                .lines()
                .filter(|l| l.contains("serving admission reviews over TLS"))
                .find_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                });
            if let Some(addr) = addr {
                return Ok(WebhookProcess {
                    name: name.to_string(),
                    addr,
                    base_url: format!("https://{addr}"),
                });
            }
            if Instant::now() > deadline || self.dead_components().iter().any(|d| d == name) {
                return Err(E2eError::NotStarted(text));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a moto server (a real implementation of the EC2, SSM and IAM APIs) on a free
    /// 127.0.0.1 port, supervised like the other components, and returns its endpoint once it
    /// answers. Python comes from `$KARPENTER_TEST_PYTHON`, else `<repo>/.venv/bin/python`.
    pub fn start_moto(&self) -> Result<String, E2eError> {
        let python = std::env::var_os("KARPENTER_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
        if !python.exists() {
            return Err(E2eError::Components(format!(
                "{} not found: create it with `python3 -m venv .venv && .venv/bin/pip install -r \
                 controller/scripts/requirements.txt` (or run `bash .ci/test.sh` once)",
                python.display()
            )));
        }
        let port = free_port()?;
        let args = ["-m", "moto.server", "-H", "127.0.0.1", "-p"]
            .iter()
            .map(|s| s.to_string())
            .chain([port.to_string()])
            .collect::<Vec<_>>();
        self.spawn("moto", &python, &args)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        self.eventually("moto to answer", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })?;
        Ok(endpoint)
    }

    /// Stops one supervised component (e.g. a webhook) and waits until it is gone.
    pub fn stop_component(&self, name: &str) {
        if let Ok(mut procs) = self.procs.lock() {
            if let Some(i) = procs.iter().position(|p| p.name == name) {
                let mut p = procs.remove(i);
                p.stop();
            }
        }
    }

    /// Registers `manifests/webhook/webhooks.yaml` pointing at `webhook` (see
    /// [`webhooks_to_url`]) and waits until the apiserver calls it.
    pub fn register_webhooks(&self, webhook: &WebhookProcess) -> Result<(), E2eError> {
        let file = repo_root().join("manifests/webhook/webhooks.yaml");
        let yaml =
            std::fs::read_to_string(&file).map_err(io(format!("read {}", file.display())))?;
        let rewritten = webhooks_to_url(&yaml, &webhook.base_url, &self.pki.ca_pem)?;
        let out = self.apply(&rewritten)?;
        if !out.status.success() {
            return Err(E2eError::Command(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        // Webhook configurations take effect through an informer: wait until a dry-run create
        // reaches the webhook (its defaulting shows up in the answer).
        let probe = "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata:\n  name: webhook-probe\nspec:\n  providerRef:\n    name: default\n";
        self.eventually("the webhooks to be called", Duration::from_secs(30), || {
            let out = self
                .kubectl_as(
                    &self.kubeconfig,
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(probe),
                )
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("karpenter.sh/capacity-type").then_some(())
        })
    }

    /// The path of a component binary.
    pub fn bin(&self, name: &str) -> Result<PathBuf, E2eError> {
        component(name)
    }

    /// Runs the real kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, E2eError> {
        self.kubectl_as(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with `kubeconfig`, feeding `stdin` if given.
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, E2eError> {
        let mut cmd = Command::new(component("kubectl")?);
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io("run kubectl"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(io("write kubectl's stdin"))?;
        }
        child.wait_with_output().map_err(io("wait for kubectl"))
    }

    /// Runs kubectl (admin) and returns its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, E2eError> {
        let out = self.kubectl(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(E2eError::Command(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// `kubectl apply -f -` of `yaml` (admin).
    pub fn apply(&self, yaml: &str) -> Result<Output, E2eError> {
        self.kubectl_as(&self.kubeconfig, &["apply", "-f", "-"], Some(yaml))
    }

    /// A fresh namespace (with its `default` ServiceAccount), deleted on drop; the control
    /// plane's logs are printed if the test panics while holding it.
    pub fn namespace(&self, prefix: &str) -> Result<TestNamespace<'_>, E2eError> {
        let n = {
            let mut m = self
                .minted
                .lock()
                .map_err(|_| E2eError::Command("poisoned".into()))?;
            *m += 1;
            *m
        };
        let name = format!("{prefix}-{}-{n}", std::process::id() % 100_000);
        self.kubectl_ok(&["create", "namespace", &name])?;
        if !self.options.controller_manager {
            // Without the ServiceAccount controller, create what admission expects.
            self.kubectl_ok(&["-n", &name, "create", "serviceaccount", "default"])?;
        } else {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self
                .kubectl(&["-n", &name, "get", "serviceaccount", "default"])?
                .status
                .code()
                != Some(0)
            {
                if Instant::now() > deadline {
                    return Err(E2eError::Command(format!(
                        "no default ServiceAccount in {name}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(TestNamespace { cp: self, name })
    }

    /// A kubeconfig for ServiceAccount `ns/name` (created if missing) with a TokenRequest token.
    pub fn service_account_kubeconfig(&self, ns: &str, name: &str) -> Result<PathBuf, E2eError> {
        let _ = self.kubectl(&["-n", ns, "create", "serviceaccount", name])?;
        let token = self.kubectl_ok(&["-n", ns, "create", "token", name, "--duration=2h"])?;
        let user = format!("system:serviceaccount:{ns}:{name}");
        let file = self.dir.join(format!("sa-{ns}-{name}.kubeconfig"));
        write(
            &file,
            &kubeconfig_yaml(
                &self.server,
                &self.pki.ca_pem,
                &user,
                &KubeAuth::Token(token.trim().to_string()),
            ),
        )?;
        Ok(file)
    }

    /// A kubeconfig for a new user allowed only `rules` (a YAML list of ClusterRole rules),
    /// bound cluster-wide.
    pub fn user_kubeconfig(&self, user: &str, rules_yaml: &str) -> Result<PathBuf, E2eError> {
        let role = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: e2e-{user}\nrules:\n{rules_yaml}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: e2e-{user}\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: e2e-{user}\n\
             subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {user}\n"
        );
        let out = self.apply(&role)?;
        if !out.status.success() {
            return Err(E2eError::Command(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        self.component_kubeconfig(user, &[])
    }

    /// The last `lines` of every component's log.
    pub fn logs(&self, lines: usize) -> String {
        let procs = match self.procs.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        procs
            .iter()
            .map(|p| {
                format!(
                    "----- {} ({}) -----\n{}",
                    p.name,
                    p.log.display(),
                    p.tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Names of components that are no longer running.
    pub fn dead_components(&self) -> Vec<String> {
        self.procs
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|c| !c.running())
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Parses `kubectl get ... -o json` output.
    pub fn get_json(&self, args: &[&str]) -> Result<serde_json::Value, E2eError> {
        let mut all: Vec<&str> = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl_ok(&all)?;
        serde_json::from_str(&out).map_err(|e| E2eError::BadResponse(format!("{e}: {out}")))
    }

    /// Polls `f` every 200 ms until it returns `Some`, or fails with the logs after `timeout`.
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> Result<T, E2eError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(E2eError::Command(format!(
                    "timed out after {timeout:?} waiting for {what}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("{}", self.logs(60));
        }
        if let Ok(mut procs) = self.procs.lock() {
            // Stop in reverse order of start: components first, etcd last.
            while let Some(mut p) = procs.pop() {
                p.stop();
            }
        }
        if !failed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A webhook started by [`ControlPlane::start_webhook`].
#[derive(Debug, Clone)]
pub struct WebhookProcess {
    /// Its component name (for [`ControlPlane::stop_component`]).
    pub name: String,
    /// Its HTTPS address.
    pub addr: std::net::SocketAddr,
    /// `https://ADDR`.
    pub base_url: String,
}

/// A namespace of one test, deleted (without waiting) on drop.
pub struct TestNamespace<'a> {
    cp: &'a ControlPlane,
    /// Its name.
    pub name: String,
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test in namespace {} failed; control-plane logs:\n{}",
                self.name,
                self.cp.logs(60)
            );
        }
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Rewrites webhook configurations from `clientConfig.service` to
/// `url: https://HOST:PORT/PATH` with `ca_pem` as `caBundle`, changing nothing else.
pub fn webhooks_to_url(yaml: &str, base_url: &str, ca_pem: &str) -> Result<String, E2eError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let mut v: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| E2eError::BadResponse(format!("webhook configuration: {e}")))?;
        if v.is_null() {
            continue;
        }
        if let Some(hooks) = v.get_mut("webhooks").and_then(|w| w.as_array_mut()) {
            for h in hooks {
                let cc = &mut h["clientConfig"];
                let path = cc
                    .pointer("/service/path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("/")
                    .to_string();
                *cc = serde_json::json!({"url": format!("{base_url}{path}"), "caBundle": b64(ca_pem)});
            }
        }
        out.push(serde_yaml::to_string(&v).map_err(|e| E2eError::BadResponse(e.to_string()))?);
    }
    Ok(out.join("---\n"))
}

/// Labels of a kwok node, as a map (for building Node objects in tests).
pub fn kwok_labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert(KWOK_NODE_LABEL.0.to_string(), KWOK_NODE_LABEL.1.to_string());
    m
}
