//! The API server without root: routing, statuses and error bodies through
//! [`route`], the same over a real unix socket in a temporary directory,
//! and `vsctl` run against it (golden `network ls` and `network inspect`,
//! Docker's error lines and exit codes).

#[path = "../../tests/src/ci.rs"]
#[allow(dead_code, unreachable_pub)]
mod ci;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use vswitch::api::types::{DnsNetworkView, FdbView, PortView};
use vswitch::api::{ApiError, ApiServer, Backend, Client, ClientError, route};
use vswitch::control::{
    ControlError, Controller, ControllerConfig, Ctx, Request, Response, SeededEntropy,
};
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{FdbRow, Origin, PortStats};

const NOW: &str = "2026-11-23T11:45:59.123456789Z";

/// A backend that applies requests to a real controller and ignores the
/// effects (nothing to execute without root), recording what it was asked.
struct Fake {
    inner: Mutex<(Controller, SeededEntropy)>,
    seen: Mutex<Vec<Request>>,
}

impl Fake {
    fn new() -> Self {
        let e = SeededEntropy::new(7);
        let c = Controller::new(ControllerConfig::default(), &Ctx::new(NOW, &e)).unwrap();
        Self {
            inner: Mutex::new((c, e)),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> String {
        serde_json::to_string(self.inner.lock().unwrap().0.model()).unwrap()
    }

    fn seen(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn network_id(&self, name: &str) -> String {
        let g = self.inner.lock().unwrap();
        let m = g.0.model();
        m.networks
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.id.clone())
            .or_else(|| m.predefined(name).map(|p| p.id.clone()))
            .unwrap()
    }
}

impl Backend for Fake {
    fn apply(&self, request: Request) -> Result<Response, ControlError> {
        self.seen.lock().unwrap().push(request.clone());
        let mut g = self.inner.lock().unwrap();
        let (c, e) = &mut *g;
        c.apply(request, &Ctx::new(NOW, e)).map(|o| o.response)
    }

    fn fdb(&self, network: Option<&str>) -> Result<Vec<FdbView>, ControlError> {
        let rows = [
            FdbRow {
                network: NetworkId(0),
                mac: MacAddr([2, 0x42, 172, 17, 0, 2]),
                port: PortId(1),
                age: None,
                origin: Origin::Static,
            },
            FdbRow {
                network: NetworkId(0),
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                port: PortId(1),
                age: Some(Duration::from_secs(42)),
                origin: Origin::Learned,
            },
        ];
        self.inner.lock().unwrap().0.fdb_views(&rows, network)
    }

    fn dns(&self, network: Option<&str>) -> Result<Vec<DnsNetworkView>, ControlError> {
        // The records the daemon would build from this model.
        let g = self.inner.lock().unwrap();
        let model = g.0.model();
        let mut ids = vswitch::dnsd::records::SandboxIds::new();
        ids.sync(model);
        let plan = vswitch::dnsd::records::build(
            model,
            &ids,
            "nameserver 192.0.2.53\n",
            &dns::resolv_conf::DnsSettings::default(),
            Path::new("/nonexistent/etc/netns"),
        );
        g.0.dns_views(&plan.records, network)
    }

    fn ports(&self) -> Result<Vec<PortView>, ControlError> {
        Ok(self.inner.lock().unwrap().0.port_views(|p| PortStats {
            rx_packets: 3,
            rx_bytes: 300,
            tx_packets: u64::from(p.0),
            ..PortStats::default()
        }))
    }
}

fn call(b: &Fake, method: &str, url: &str, body: &str) -> (u16, serde_json::Value) {
    let r = route(b, method, url, body.as_bytes());
    let json = if r.body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&r.body).unwrap()
    };
    (r.status, json)
}

fn message(v: &serde_json::Value) -> &str {
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v}"))
}

#[test]
fn routes_answer_with_fitting_statuses() {
    let b = Fake::new();
    let (s, v) = call(&b, "GET", "/v1/networks", "");
    assert_eq!(s, 200);
    // Docker's three: bridge, host, none.
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (s, v) = call(&b, "POST", "/v1/networks", r#"{"Name":"n1"}"#);
    assert_eq!(s, 201);
    assert_eq!(v["Id"].as_str().unwrap().len(), 64);
    assert_eq!(v["Warning"], "");
    let (s, v) = call(&b, "POST", "/v1/networks", r#"{"Name":"n1"}"#);
    assert_eq!(
        (s, message(&v)),
        (409, "network with name n1 already exists")
    );
    let (s, v) = call(&b, "GET", "/v1/networks/n1", "");
    assert_eq!((s, v["Name"].as_str()), (200, Some("n1")));
    let (s, v) = call(&b, "GET", "/v1/networks/nope", "");
    assert_eq!((s, message(&v)), (404, "network nope not found"));
    let (s, _) = call(&b, "POST", "/v1/sandboxes", r#"{"Name":"c1"}"#);
    assert_eq!(s, 201);
    let (s, v) = call(&b, "GET", "/v1/sandboxes/c1", "");
    assert_eq!((s, v["Name"].as_str()), (200, Some("c1")));
    let (s, v) = call(&b, "GET", "/v1/sandboxes", "");
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    let (s, v) = call(
        &b,
        "POST",
        "/v1/networks/n1/connect",
        r#"{"Container":"c1","EndpointConfig":{"Aliases":["web"]}}"#,
    );
    assert_eq!((s, v["Interface"].as_str()), (200, Some("eth0")));
    assert_eq!(v["IPv4Address"], "172.18.0.2/16");
    let (s, v) = call(&b, "GET", "/v1/fdb", "");
    assert_eq!((s, v.as_array().unwrap().len()), (200, 2));
    let (s, v) = call(&b, "GET", "/v1/fdb?network=n1", "");
    assert_eq!((s, v.as_array().unwrap().len()), (200, 0));
    let (s, v) = call(&b, "GET", "/v1/fdb?network=ghost", "");
    assert_eq!((s, message(&v)), (404, "network ghost not found"));
    let (s, v) = call(&b, "GET", "/v1/ports", "");
    assert_eq!((s, v[0]["Interface"].as_str()), (200, Some("eth0")));
    let (s, v) = call(&b, "DELETE", "/v1/networks/n1", "");
    assert_eq!(s, 409);
    assert!(message(&v).ends_with("has active endpoints"));
    let (s, v) = call(&b, "DELETE", "/v1/networks/bridge", "");
    assert_eq!(
        (s, message(&v)),
        (403, "bridge is a pre-defined network and cannot be removed")
    );
    let (s, v) = call(
        &b,
        "POST",
        "/v1/networks/n1/disconnect",
        r#"{"Container":"c1"}"#,
    );
    assert_eq!((s, v), (204, serde_json::Value::Null));
    let (s, _) = call(&b, "DELETE", "/v1/networks/n1", "");
    assert_eq!(s, 204);
    let (s, _) = call(&b, "DELETE", "/v1/sandboxes/c1", "");
    assert_eq!(s, 204);
    let (s, v) = call(&b, "DELETE", "/v1/sandboxes/c1", "");
    assert_eq!((s, message(&v)), (404, "No such sandbox: c1"));
    // Percent-encoded names and a trailing slash are understood.
    assert_eq!(call(&b, "GET", "/v1/networks/%62ridge", "").0, 200);
    assert_eq!(call(&b, "GET", "/v1/networks/", "").0, 200);
}

#[test]
fn malformed_input_is_a_clear_400_that_changes_nothing() {
    let b = Fake::new();
    let before = b.state();
    let cases: &[(&str, &str, &str)] = &[
        (
            "/v1/networks",
            r#"{"Name":"#,
            "invalid JSON in request body: EOF while parsing",
        ),
        (
            "/v1/networks",
            "",
            "invalid JSON in request body: the body is empty",
        ),
        (
            "/v1/networks",
            "   ",
            "invalid JSON in request body: the body is empty",
        ),
        (
            "/v1/networks",
            "[1,2]",
            "invalid JSON in request body: a JSON object was expected",
        ),
        (
            "/v1/networks",
            r#"["n1"]"#,
            "invalid JSON in request body: a JSON object was expected",
        ),
        (
            "/v1/networks",
            "nul",
            "invalid JSON in request body: EOF while parsing a value",
        ),
        (
            "/v1/networks",
            "42",
            "invalid JSON in request body: a JSON object was expected",
        ),
        (
            "/v1/networks",
            r#"{"Name":5}"#,
            "invalid JSON in request body: invalid type: integer `5`",
        ),
        (
            "/v1/networks",
            r#"{"Nmae":"x"}"#,
            "invalid JSON in request body: unknown field `Nmae`",
        ),
        (
            "/v1/networks",
            r#"{"Name":"x","IPAM":{"Config":[{"Subnet":1}]}}"#,
            "invalid JSON in request body: invalid type: integer `1`",
        ),
        (
            "/v1/networks",
            r#"{"Name":"x","Options":{"a":true}}"#,
            "invalid JSON in request body: invalid type: boolean `true`",
        ),
        (
            "/v1/sandboxes",
            r#"{"name":"c1"}"#,
            "invalid JSON in request body: unknown field `name`",
        ),
        (
            "/v1/networks/bridge/connect",
            r#"{"Container":"c1","PortKind":"vxlan"}"#,
            "invalid JSON in request body: unknown variant `vxlan`",
        ),
        (
            "/v1/networks/bridge/connect",
            r#"{"Container":"c1","EndpointConfig":{"Aliases":"web"}}"#,
            "invalid JSON in request body: invalid type: string",
        ),
        (
            "/v1/networks/bridge/disconnect",
            "{}",
            "invalid JSON in request body: missing field `Container`",
        ),
    ];
    for (url, body, prefix) in cases {
        let (s, v) = call(&b, "POST", url, body);
        assert_eq!(s, 400, "{url} {body}: {v}");
        assert!(
            message(&v).starts_with(prefix),
            "{url} {body}: {}",
            message(&v)
        );
    }
    let r = route(&b, "POST", "/v1/networks", b"{\"Name\":\"\xff\xfe\"}");
    assert_eq!(r.status, 400);
    // Bad values that parse as JSON reach the controller and are refused there.
    let (s, v) = call(
        &b,
        "POST",
        "/v1/networks",
        r#"{"Name":"x","IPAM":{"Config":[{"Subnet":"10.0.0.0/99"}]}}"#,
    );
    assert_eq!((s, message(&v)), (400, "invalid CIDR address: 10.0.0.0/99"));
    assert_eq!(b.seen(), 1, "malformed bodies never reach the backend");
    assert_eq!(b.state(), before);
}

#[test]
fn unknown_routes_and_methods() {
    let b = Fake::new();
    for (method, url, status, msg) in [
        ("GET", "/v1/nope", 404, "page not found"),
        ("GET", "/", 404, "page not found"),
        ("GET", "/v2/networks", 404, "page not found"),
        ("GET", "v1/networks", 404, "page not found"),
        ("GET", "/v1/networks/a/b/c", 404, "page not found"),
        (
            "PUT",
            "/v1/networks",
            405,
            "method PUT is not allowed on /v1/networks",
        ),
        (
            "GET",
            "/v1/networks/bridge/connect",
            405,
            "method GET is not allowed on /v1/networks/bridge/connect",
        ),
        (
            "POST",
            "/v1/ports",
            405,
            "method POST is not allowed on /v1/ports",
        ),
        (
            "PATCH",
            "/v1/sandboxes/x",
            405,
            "method PATCH is not allowed on /v1/sandboxes/x",
        ),
        (
            "GET",
            "/v1/networks/%zz",
            400,
            "invalid percent-encoding in /v1/networks/%zz",
        ),
        (
            "GET",
            "/v1/fdb?network=%g",
            400,
            "invalid percent-encoding in query \"network=%g\"",
        ),
    ] {
        let (s, v) = call(&b, method, url, "");
        assert_eq!((s, message(&v)), (status, msg), "{method} {url}");
    }
    assert_eq!(b.seen(), 0);
}

// ----- Over a real socket. -----

static NEXT_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vswitch-api-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server on `<dir>/run/api.sock` serving `backend` on a thread.
struct Running {
    path: PathBuf,
    stop: vswitch::api::ShutdownHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Running {
    fn start(dir: &Path, backend: Arc<Fake>) -> Self {
        let path = dir.join("run").join("api.sock");
        let mut server = ApiServer::bind(&path).unwrap();
        let stop = server.shutdown_handle();
        let thread = thread::spawn(move || server.run(backend));
        Self {
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

#[test]
fn server_over_a_unix_socket() {
    let dir = TempDir::new("sock");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let mode = std::fs::metadata(&server.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    // A client stalled in the middle of its body holds up only itself.
    let mut stalled = std::os::unix::net::UnixStream::connect(&server.path).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        b"POST /v1/networks HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Na",
    )
    .unwrap();
    thread::sleep(Duration::from_millis(50));

    let client = Client::new(&server.path).with_timeout(Duration::from_secs(10));
    let nets = client.networks().unwrap();
    assert_eq!(nets[0].name, "bridge");
    let raw = client
        .request("POST", "/v1/networks", Some(b"{oops"))
        .unwrap();
    assert_eq!(raw.status, 400);
    let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert!(message(&body).starts_with("invalid JSON in request body:"));
    let raw = client.request("GET", "/v1/unknown", None).unwrap();
    assert_eq!(raw.status, 404);
    let err = client.network("ghost").unwrap_err();
    assert!(
        matches!(&err, ClientError::Daemon { status: 404, message } if message == "network ghost not found")
    );
    // A live socket is not taken over.
    assert!(matches!(
        ApiServer::bind(&server.path),
        Err(ApiError::InUse(_))
    ));
    drop(stalled);
    let path = server.path.clone();
    drop(server);
    assert!(!path.exists(), "the socket is removed on shutdown");
}

#[test]
fn stale_sockets_are_replaced_and_other_files_left_alone() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("api.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = ApiServer::bind(&path).unwrap();
    drop(server);
    let file = dir.0.join("plain");
    std::fs::write(&file, b"not a socket").unwrap();
    assert!(matches!(
        ApiServer::bind(&file),
        Err(ApiError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
}

#[test]
fn client_reports_a_missing_daemon() {
    let dir = TempDir::new("nodaemon");
    let path = dir.0.join("none.sock");
    let err = Client::new(&path).networks().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Cannot connect to the vswitch daemon at unix://{}. Is vswitchd running?",
            path.display()
        )
    );
}

// ----- vsctl against the server. -----

fn vsctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}, stderr {}",
        o.status,
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn vsctl_network_ls_and_inspect_golden() {
    let dir = TempDir::new("vsctl");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let s = server.path.as_path();

    let id = ok(&vsctl(s, &["network", "create", "n1"]));
    assert_eq!(id.trim(), backend.network_id("n1"));
    let sb_id = ok(&vsctl(s, &["sandbox", "create", "c1"]))
        .trim()
        .to_owned();
    assert_eq!(sb_id.len(), 64);
    assert_eq!(ok(&vsctl(s, &["network", "connect", "n1", "c1"])), "");

    let bridge = backend.network_id("bridge");
    let n1 = backend.network_id("n1");
    let host = backend.network_id("host");
    let none = backend.network_id("none");
    assert_eq!(
        ok(&vsctl(s, &["network", "ls"])),
        format!(
            "NETWORK ID     NAME      DRIVER    SCOPE\n\
             {}   bridge    bridge    local\n\
             {}   host      host      local\n\
             {}   n1        bridge    local\n\
             {}   none      null      local\n",
            &bridge[..12],
            &host[..12],
            &n1[..12],
            &none[..12]
        )
    );

    let endpoint = {
        let g = backend.inner.lock().unwrap();
        g.0.model().endpoints[0].id.clone()
    };
    let golden = r#"[
    {
        "Name": "n1",
        "Id": "<NET>",
        "Created": "2026-11-23T11:45:59.123456789Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [
                {
                    "Subnet": "172.18.0.0/16",
                    "Gateway": "172.18.0.1"
                }
            ]
        },
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {
            "Network": ""
        },
        "ConfigOnly": false,
        "Containers": {
            "<SB>": {
                "Name": "c1",
                "EndpointID": "<EP>",
                "MacAddress": "02:42:ac:12:00:02",
                "IPv4Address": "172.18.0.2/16",
                "IPv6Address": ""
            }
        },
        "Options": {},
        "Labels": {}
    }
]
"#
    .replace("<NET>", &n1)
    .replace("<SB>", &sb_id)
    .replace("<EP>", &endpoint);
    assert_eq!(ok(&vsctl(s, &["network", "inspect", "n1"])), golden);

    let bridge_json = ok(&vsctl(s, &["network", "inspect", "bridge"]));
    let v: serde_json::Value = serde_json::from_str(&bridge_json).unwrap();
    assert_eq!(v[0]["IPAM"]["Options"], serde_json::Value::Null);
    assert_eq!(
        serde_json::to_string(&v[0]["IPAM"]["Config"]).unwrap(),
        r#"[{"Subnet":"172.17.0.0/16"}]"#
    );
    assert_eq!(v[0]["Options"]["com.docker.network.bridge.name"], "docker0");

    // --format json prints the API's answer.
    let json = ok(&vsctl(s, &["--format", "json", "network", "ls"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);

    // host and none as Docker shows them.
    let v: serde_json::Value =
        serde_json::from_str(&ok(&vsctl(s, &["network", "inspect", "host", "none"]))).unwrap();
    for (net, driver) in [(&v[0], "host"), (&v[1], "null")] {
        assert_eq!(net["Driver"], driver);
        assert_eq!(net["Scope"], "local");
        assert_eq!(
            net["IPAM"],
            serde_json::json!({"Driver": "default", "Options": null, "Config": []})
        );
        assert_eq!(net["Containers"], serde_json::json!({}));
        assert_eq!(net["Options"], serde_json::json!({}));
        assert_eq!(net["Labels"], serde_json::json!({}));
        assert_eq!(net["Internal"], false);
    }
}

#[test]
fn vsctl_errors_and_exit_codes() {
    let dir = TempDir::new("vsctl-err");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let s = server.path.as_path();

    ok(&vsctl(
        s,
        &[
            "network",
            "create",
            "--subnet",
            "10.66.0.0/24",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "n1",
        ],
    ));
    let o = vsctl(s, &["network", "create", "n1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: network with name n1 already exists\n"
    );
    let o = vsctl(s, &["network", "create", "--gateway", "10.1.0.1", "n2"]);
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: every ip-range or gateway must have a corresponding subnet\n"
    );
    let o = vsctl(s, &["network", "inspect", "n1", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "Error: No such network: nope\n");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["Options"]["com.docker.network.driver.mtu"], "1400");

    ok(&vsctl(s, &["sandbox", "create", "c1"]));
    ok(&vsctl(
        s,
        &[
            "network",
            "connect",
            "--ip",
            "10.66.0.9",
            "--alias",
            "web",
            "n1",
            "c1",
        ],
    ));
    let o = vsctl(
        s,
        &["network", "connect", "--ip", "172.17.0.9", "bridge", "c1"],
    );
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: user specified IP address is supported on user defined networks only\n"
    );
    let o = vsctl(s, &["network", "rm", "n1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).ends_with("has active endpoints\n"));

    let fdb = ok(&vsctl(s, &["show-fdb"]));
    assert_eq!(
        fdb,
        "PORT      SANDBOX   NETWORK   MAC                 AGE\n\
         1         c1        bridge    02:42:ac:11:00:02   static\n\
         1         c1        bridge    02:00:00:00:00:09   42\n"
    );
    let ports = ok(&vsctl(s, &["show-ports"]));
    assert!(
        ports.starts_with("PORT      SANDBOX   INTERFACE   NETWORK   MAC"),
        "{ports}"
    );
    assert!(
        ports.contains("eth0        n1        02:42:0a:42:00:09   10.66.0.9/24"),
        "{ports}"
    );
    let sbs = ok(&vsctl(s, &["sandbox", "ls"]));
    assert!(sbs.starts_with("SANDBOX ID     NAME      NETNS"), "{sbs}");

    ok(&vsctl(s, &["network", "disconnect", "n1", "c1"]));
    assert_eq!(ok(&vsctl(s, &["network", "rm", "n1"])), "n1\n");
    assert_eq!(ok(&vsctl(s, &["sandbox", "rm", "c1"])), "c1\n");

    // Bad arguments are clap's usage error, status 2.
    let o = vsctl(s, &["network", "create"]);
    assert_eq!(o.status.code(), Some(2));
    let o = vsctl(s, &["network", "create", "--aux-address", "=1.2.3.4", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = vsctl(s, &["exec", "c1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn vsctl_without_a_daemon() {
    let dir = TempDir::new("vsctl-none");
    let path = dir.0.join("vswitchd.sock");
    let o = vsctl(&path, &["network", "ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "Cannot connect to the vswitch daemon at unix://{}. Is vswitchd running?\n",
            path.display()
        )
    );
    assert!(o.stdout.is_empty());
}

/// Root (CAP_SYS_ADMIN for setns) and `unshare` are needed; without them
/// the test says so, and fails under `CI=true` rather than pass silently.
fn can_enter_namespaces() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    ci::can_run(
        "vsctl exec",
        (!ok).then_some("root and unshare(1) to create a network namespace"),
    )
}

#[test]
fn vsctl_exec_runs_inside_the_sandbox_namespace() {
    if !can_enter_namespaces() {
        return;
    }
    let dir = TempDir::new("vsctl-exec");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let s = server.path.as_path();
    // A namespace of our own making: a child holding a fresh netns.
    let mut holder = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .unwrap();
    let ns = format!("/proc/{}/ns/net", holder.id());
    let mut tries = 0;
    while std::fs::read_link(&ns).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
        tries += 1;
        assert!(tries < 100, "unshare did not enter a new namespace");
        thread::sleep(Duration::from_millis(20));
    }
    ok(&vsctl(s, &["sandbox", "create", "--netns", &ns, "c1"]));
    // Inside, only the loopback device exists.
    let links = ok(&vsctl(s, &["exec", "c1", "--", "ip", "-o", "link", "show"]));
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    // The command's exit status is vsctl's.
    let o = vsctl(s, &["exec", "c1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let o = vsctl(s, &["exec", "c1", "--", "/nonexistent/cmd"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(text(&o.stderr).starts_with("Error: cannot run /nonexistent/cmd in sandbox c1"));
    let o = vsctl(s, &["exec", "ghost", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: No such sandbox: ghost\n"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn vsctl_run_cleans_up_with_rm() {
    let dir = TempDir::new("vsctl-run");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let s = server.path.as_path();
    ok(&vsctl(s, &["network", "create", "n1"]));
    // The fake backend creates no namespace file, so the command cannot
    // start; --rm still removes the sandbox.
    let o = vsctl(
        s,
        &["run", "--rm", "--name", "r1", "--net", "n1", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(text(&o.stderr).starts_with("Error: cannot open the network namespace of sandbox r1"));
    assert_eq!(ok(&vsctl(s, &["sandbox", "ls"])).lines().count(), 1);
    // A refused connect leaves no sandbox behind either.
    let o = vsctl(
        s,
        &[
            "run", "--name", "r2", "--net", "bridge", "--alias", "x", "--", "true",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: network-scoped alias is supported only for containers in user defined networks\n"
    );
    assert_eq!(ok(&vsctl(s, &["sandbox", "ls"])).lines().count(), 1);
}

#[test]
fn dns_records_through_the_api_and_vsctl() {
    let dir = TempDir::new("vsctl-dns");
    let backend = Arc::new(Fake::new());
    let server = Running::start(&dir.0, Arc::clone(&backend));
    let s = server.path.as_path();

    // Nothing but the default bridge: no records.
    assert_eq!(ok(&vsctl(s, &["--format", "json", "dns", "show"])), "[]\n");

    ok(&vsctl(
        s,
        &["network", "create", "--subnet", "10.7.0.0/24", "web"],
    ));
    ok(&vsctl(
        s,
        &["network", "create", "--subnet", "10.8.0.0/24", "back"],
    ));
    for sb in ["c1", "c2", "c3"] {
        ok(&vsctl(s, &["sandbox", "create", sb]));
    }
    ok(&vsctl(
        s,
        &[
            "network", "connect", "--alias", "db", "--alias", "Shared", "web", "c1",
        ],
    ));
    ok(&vsctl(
        s,
        &["network", "connect", "--alias", "shared", "web", "c2"],
    ));
    ok(&vsctl(s, &["network", "connect", "back", "c2"]));
    // On the default bridge only: not in any record.
    ok(&vsctl(s, &["network", "connect", "bridge", "c3"]));
    let short = |name: &str| {
        let g = backend.inner.lock().unwrap();
        let sb =
            g.0.model()
                .sandboxes
                .iter()
                .find(|x| x.name == name)
                .unwrap();
        sb.short_id().to_owned()
    };
    let (s1, s2) = (short("c1"), short("c2"));

    // The route: every network sorted by name, or one; errors as fdb's.
    let (status, all) = call(&backend, "GET", "/v1/dns", "");
    assert_eq!(status, 200);
    let nets: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Network"].as_str().unwrap())
        .collect();
    assert_eq!(nets, ["back", "web"]);
    let (status, web) = call(&backend, "GET", "/v1/dns?network=web", "");
    assert_eq!(status, 200);
    let web: Vec<DnsNetworkView> = serde_json::from_value(web).unwrap();
    assert_eq!(web.len(), 1);
    let web = &web[0];
    assert_eq!(web.id, backend.network_id("web"));
    assert!(!web.internal);
    assert_eq!(web.endpoints.len(), 2);
    assert_eq!(web.endpoints[0].name, "c1");
    assert_eq!(web.endpoints[0].aliases, ["db", "Shared"]);
    assert_eq!(web.endpoints[0].short_id, s1);
    assert_eq!(web.endpoints[0].ipv4_address, "10.7.0.2");
    let name = |n: &str| web.names.iter().find(|x| x.name == n).unwrap();
    assert_eq!(name("c1").addresses, ["10.7.0.2"]);
    assert_eq!(name("c1").kinds, ["name"]);
    assert_eq!(name("db").kinds, ["alias"]);
    assert_eq!(name("shared").addresses, ["10.7.0.2", "10.7.0.3"]);
    assert_eq!(name(&s2).kinds, ["short-id"]);
    assert_eq!(web.names.len(), 6, "{:?}", web.names);
    assert_eq!(web.ptr.len(), 2);
    assert_eq!(web.ptr[0].address, "10.7.0.2");
    assert_eq!(web.ptr[0].name, "c1.web.");
    // The default bridge is a network, with no records.
    let (status, bridge) = call(&backend, "GET", "/v1/dns?network=bridge", "");
    assert_eq!((status, bridge), (200, serde_json::json!([])));
    let (status, v) = call(&backend, "GET", "/v1/dns?network=ghost", "");
    assert_eq!(status, 404);
    assert_eq!(message(&v), "network ghost not found");
    let (status, _) = call(&backend, "POST", "/v1/dns", "{}");
    assert_eq!(status, 405);
    let (status, _) = call(&backend, "GET", "/v1/dns?network=%zz", "");
    assert_eq!(status, 400);

    // The client and vsctl.
    let client = Client::new(s).with_timeout(Duration::from_secs(10));
    assert_eq!(client.dns(Some("web")).unwrap()[0], *web);
    assert_eq!(client.dns(None).unwrap().len(), 2);
    let json = ok(&vsctl(s, &["--format", "json", "dns", "show", "web"]));
    let parsed: Vec<DnsNetworkView> = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0], *web);
    let mut names: Vec<(String, &str, &str)> = vec![
        ("c1".to_owned(), "name", "10.7.0.2"),
        ("c2".to_owned(), "name", "10.7.0.3"),
        ("db".to_owned(), "alias", "10.7.0.2"),
        ("shared".to_owned(), "alias", "10.7.0.2,10.7.0.3"),
        (s1, "short-id", "10.7.0.2"),
        (s2, "short-id", "10.7.0.3"),
    ];
    names.sort();
    let mut golden = "NETWORK   NAME           KIND       ADDRESSES\n".to_owned();
    for (n, kind, addrs) in &names {
        golden.push_str(&format!("web       {n:<15}{kind:<11}{addrs}\n"));
    }
    golden.push_str(
        "\nNETWORK   ADDRESS    PTR\n\
         web       10.7.0.2   c1.web.\n\
         web       10.7.0.3   c2.web.\n",
    );
    assert_eq!(ok(&vsctl(s, &["dns", "show", "web"])), golden);
    let o = vsctl(s, &["dns", "show", "ghost"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "Error response from daemon: network ghost not found\n"
    );
}
