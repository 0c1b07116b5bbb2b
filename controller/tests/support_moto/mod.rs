//! A moto server (a real EC2/SSM API implementation) on 127.0.0.1 for the `aws_*` tests.
//!
//! One server per test binary, started on first use; tests take a lock (they run one at a
//! time) and the server is reset (`POST /moto-api/reset`) before each. The server runs under a
//! small Python parent that exits when our end of its stdin closes, i.e. when this test process
//! exits, so no server outlives the tests.
//!
//! Python comes from `$KARPENTER_TEST_PYTHON`, else `<workspace>/.venv/bin/python`; without moto
//! the tests fail with the command that installs it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use karpenter::cloud::aws::{SdkApi, SdkSettings};

/// Region every test uses.
pub const REGION: &str = "us-east-1";

struct Server {
    endpoint: String,
    _child: Child,
}

static SERVER: OnceLock<Result<Mutex<Server>, String>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

fn python() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KARPENTER_TEST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    Err(install_hint(
        "neither KARPENTER_TEST_PYTHON nor <workspace>/.venv/bin/python exists",
    ))
}

fn install_hint(why: &str) -> String {
    format!(
        "moto is required for the AWS provider tests ({why}). Install it with:\n  \
         python3 -m venv .venv && .venv/bin/pip install -r controller/scripts/requirements.txt\n\
         (run from the workspace root), or run .ci/test.sh, or point KARPENTER_TEST_PYTHON at a \
         Python that has moto[server]"
    )
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// One HTTP/1.1 request to the server; returns the status code.
fn http(endpoint: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {buf:.80}")))
}

const LAUNCHER: &str = r#"
import sys
try:
    from moto.server import ThreadedMotoServer
except ImportError as e:
    print("moto is not installed:", e, file=sys.stderr)
    sys.exit(3)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]))
server.start()
sys.stdin.read()  # returns when the test process exits
server.stop()
"#;

fn start() -> Result<Server, String> {
    let python = python()?;
    let port = free_port()?;
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(LAUNCHER)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| install_hint(&format!("cannot run {}: {e}", python.display())))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(install_hint(&format!(
                "{} exited with {status}: {}",
                python.display(),
                err.trim()
            )));
        }
        if http(&endpoint, "GET", "/moto-api/").is_ok() {
            // Keep stdin open for the life of the process; drop stderr to avoid a full pipe.
            child.stderr = None;
            return Ok(Server {
                endpoint,
                _child: child,
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "moto server on {endpoint} did not answer within 60 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A clean moto server for one test; tests holding it run one at a time.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _serial: MutexGuard<'static, ()>,
}

/// Starts (once) and resets the server, and installs the rustls crypto provider.
pub fn moto() -> Moto {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = match SERVER.get_or_init(|| start().map(Mutex::new)) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let endpoint = server
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .endpoint
        .clone();
    let status = http(&endpoint, "POST", "/moto-api/reset").expect("reset moto");
    assert_eq!(status, 200, "moto reset failed");
    Moto {
        endpoint,
        _serial: serial,
    }
}

impl Moto {
    /// SDK clients pointed at this server with static fake credentials.
    pub fn api(&self, page_size: Option<i32>) -> SdkApi {
        SdkApi::with_static_credentials(
            &SdkSettings {
                region: REGION.to_string(),
                endpoint_url: Some(self.endpoint.clone()),
                page_size,
            },
            "testing",
            "testing",
        )
    }
}

/// Cluster name of every fixture.
pub const CLUSTER: &str = "demo";
/// Instance profile the fixture creates (with [`NODE_ROLE`]) and [`config`] defaults to.
pub const INSTANCE_PROFILE: &str = "KarpenterNodeInstanceProfile";
/// Role attached to [`INSTANCE_PROFILE`].
pub const NODE_ROLE: &str = "KarpenterNodeRole";
/// SSM prefix under which the tests write AMI parameters.
pub const SSM_PREFIX: &str = "/karpenter-test";

/// Resources created in moto for a test.
pub struct Fixture {
    /// Tagged subnets (us-east-1a, us-east-1b).
    pub subnets: Vec<String>,
    /// An untagged subnet (us-east-1c).
    pub untagged_subnet: String,
    /// The tagged security group.
    pub security_group: String,
    /// The amd64 AMI the parameters point to.
    pub ami: String,
    /// The arm64 AMI the parameters point to.
    pub ami_arm64: String,
}

/// Creates an IAM instance profile, and `role` attached to it when given (moto serves IAM on
/// the same endpoint).
pub async fn instance_profile(api: &SdkApi, name: &str, role: Option<&str>) {
    let iam = api.iam();
    iam.create_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .unwrap();
    if let Some(role) = role {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
            )
            .send()
            .await
            .unwrap();
        iam.add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .unwrap();
    }
}

/// Creates a VPC with two tagged subnets, one untagged, a tagged security group, AMI
/// parameters for AL2 and Bottlerocket (amd64 and arm64) under [`SSM_PREFIX`], and the
/// instance profile [`INSTANCE_PROFILE`] with a role.
pub async fn fixture(api: &SdkApi) -> Fixture {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let ec2 = api.ec2();
    let discovery = || {
        Tag::builder()
            .key("karpenter.sh/discovery")
            .value(CLUSTER)
            .build()
    };
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b", "us-east-1c"]
        .iter()
        .enumerate()
    {
        let mut req = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*zone);
        if i < 2 {
            req = req.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .tags(discovery())
                    .build(),
            );
        }
        subnets.push(req.send().await.unwrap().subnet.unwrap().subnet_id.unwrap());
    }
    let untagged_subnet = subnets.pop().unwrap();
    let security_group = ec2
        .create_security_group()
        .group_name("nodes")
        .description("nodes")
        .vpc_id(&vpc)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(discovery())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap();
    instance_profile(api, INSTANCE_PROFILE, Some(NODE_ROLE)).await;
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let ami = images.images()[0].image_id().unwrap().to_string();
    let ami_arm64 = images.images()[1].image_id().unwrap().to_string();
    for (name, value) in [
        (
            "eks/optimized-ami/1.27/amazon-linux-2/recommended/image_id",
            &ami,
        ),
        (
            "eks/optimized-ami/1.27/amazon-linux-2-arm64/recommended/image_id",
            &ami_arm64,
        ),
        ("bottlerocket/aws-k8s-1.27/x86_64/latest/image_id", &ami),
        (
            "bottlerocket/aws-k8s-1.27/arm64/latest/image_id",
            &ami_arm64,
        ),
    ] {
        api.ssm()
            .put_parameter()
            .name(format!("{SSM_PREFIX}/{name}"))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap();
    }
    Fixture {
        subnets,
        untagged_subnet,
        security_group,
        ami,
        ami_arm64,
    }
}

/// The provider settings tests use.
pub fn config() -> karpenter::cloud::aws::AwsConfig {
    let mut c = karpenter::cloud::aws::AwsConfig::new(CLUSTER);
    c.cluster_endpoint = "https://demo.example.com".into();
    c.cluster_ca_bundle = "Q0EK".into();
    c.ssm_parameter_prefix = SSM_PREFIX.into();
    c.default_instance_profile = Some(INSTANCE_PROFILE.into());
    c
}

/// A provisioner with an inline provider.
pub fn provisioner(
    name: &str,
    provider: karpenter::api::AwsProvider,
) -> karpenter::api::Provisioner {
    karpenter::api::Provisioner::new(
        name,
        karpenter::api::ProvisionerSpec {
            provider: Some(provider),
            ..Default::default()
        },
    )
}

/// A launch request for on-demand capacity.
pub fn request(
    provisioner: &karpenter::api::Provisioner,
    token: &str,
    types: &[&str],
) -> karpenter::cloud::provider::NodeRequest {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        "karpenter.sh/provisioner-name".to_string(),
        provisioner.metadata.name.clone().unwrap_or_default(),
    );
    karpenter::cloud::provider::NodeRequest {
        provisioner: provisioner.clone(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        capacity_types: ["on-demand".to_string()].into(),
        zones: Default::default(),
        labels,
        taints: vec![],
        client_token: token.to_string(),
    }
}

/// Runs a future on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
