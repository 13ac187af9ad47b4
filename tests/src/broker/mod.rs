//! A private RabbitMQ node for tests that break their broker on purpose (close its
//! connections, restart it, raise alarms): the installed `rabbitmq-server`, started on free
//! ports with its own node name, data directory and Erlang cookie, and shut down on drop.
//! It never touches the shared broker on 5672.
//!
//! With `GUIRPC_TEST_RABBITMQ_ROOT` set to a tree holding another RabbitMQ (the Debian 13
//! tree `scripts/broker --version 4` makes), nodes run that one, through `chroot`, with
//! their data directories inside the tree.

mod certificates;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `start` (starting a node, or several) once no other private node of this test process is being
/// used: booting Erlang VMs side by side on two cores makes every timing in the tests that
/// break their broker meaningless. The guard is the turn: hold it until the node is done.
pub async fn one_at_a_time<T: Send + 'static>(
    start: impl FnOnce() -> T + Send + 'static,
) -> (tokio::sync::MutexGuard<'static, ()>, T) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = ONE_AT_A_TIME.lock().await;
    let broker = tokio::task::spawn_blocking(start).await.unwrap();
    (turn, broker)
}

/// A running private node.
#[derive(Debug)]
pub struct PrivateBroker {
    node: String,
    dir: PathBuf,
    port: u16,
    dist_port: u16,
    tls_port: Option<u16>,
}

/// What a private node's TLS listener asks of its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    None,
    /// A listener with a certificate of its own; clients show none.
    Server,
    /// Clients may also authenticate by a certificate its CA signed (`EXTERNAL`, the
    /// common name the user).
    ClientCertificates,
}

/// The tree of the RabbitMQ that private nodes run, when not the machine's own.
fn tree() -> Option<PathBuf> {
    std::env::var_os("GUIRPC_TEST_RABBITMQ_ROOT")
        .filter(|root| !root.is_empty())
        .map(PathBuf::from)
}

/// A command running one of RabbitMQ's scripts directly, bypassing the wrapper that would
/// switch to the `rabbitmq` user and read the shared node's configuration: the installed
/// RabbitMQ's, or the one in [`tree`] through `chroot`.
fn script(name: &str) -> Command {
    let direct = Path::new("/usr/lib/rabbitmq/bin").join(name);
    match tree() {
        Some(root) => {
            let mut command = Command::new("chroot");
            command
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
            command.env("LANG", "C.UTF-8").arg(root).arg(direct);
            command
        }
        None if direct.exists() => Command::new(direct),
        None => Command::new(name),
    }
}

/// A path of the node's directory as the broker sees it: inside the tree, when it runs in one.
fn seen_by_broker(path: &Path) -> PathBuf {
    match tree() {
        Some(root) => Path::new("/").join(path.strip_prefix(&root).unwrap_or(path)),
        None => path.to_owned(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts AMQP connections.
    pub fn start(test: &str) -> PrivateBroker {
        PrivateBroker::start_with(test, false)
    }

    /// Starts a node that also accepts `amqps://` connections, with a certificate for
    /// 127.0.0.1 signed by a CA of its own ([`PrivateBroker::ca_file`]).
    pub fn start_with_tls(test: &str) -> PrivateBroker {
        PrivateBroker::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> PrivateBroker {
        let tls = if tls { Tls::Server } else { Tls::None };
        PrivateBroker::start_node(test, tls, None, None)
    }

    /// Starts a node whose `amqps://` clients may authenticate by a certificate
    /// ([`PrivateBroker::client_certificate`]): the `EXTERNAL` mechanism, the certificate's
    /// common name the user.
    pub fn start_with_client_certificates(test: &str) -> PrivateBroker {
        PrivateBroker::start_node(test, Tls::ClientCertificates, None, None)
    }

    /// Adds a user with every permission on `/`.
    pub fn add_user(&self, name: &str, password: &str) {
        self.ctl(&["add_user", name, password]);
        self.ctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
    }

    /// The node's AMQP URI for `user`.
    pub fn uri_as(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's `amqps://` URI naming no user: a client certificate authenticates.
    pub fn tls_uri_without_user(&self) -> String {
        let port = self.tls_port.expect("the broker was started without TLS");
        format!("amqps://127.0.0.1:{port}/%2f")
    }

    /// Starts a node whose consumer timeout (`consumer_timeout`: how long a delivery may
    /// stay unacknowledged before the broker closes its channel) is `timeout`, checked
    /// every second instead of every minute.
    pub fn start_with_consumer_timeout(test: &str, timeout: Duration) -> PrivateBroker {
        PrivateBroker::start_node(test, Tls::None, None, Some(timeout))
    }

    /// A private node, returned as soon as it accepts connections: before it has booted.
    pub fn start_booting(test: &str) -> PrivateBroker {
        let broker = PrivateBroker::launch(test, Tls::None, None, None);
        broker.wait_accepting(Duration::from_secs(60));
        broker
    }

    fn start_node(
        test: &str,
        tls: Tls,
        cookie: Option<&str>,
        consumer_timeout: Option<Duration>,
    ) -> PrivateBroker {
        let broker = PrivateBroker::launch(test, tls, cookie, consumer_timeout);
        broker.wait_booted(Duration::from_secs(60));
        broker
    }

    /// Starts a node, and returns at once.
    fn launch(
        test: &str,
        tls: Tls,
        cookie: Option<&str>,
        consumer_timeout: Option<Duration>,
    ) -> PrivateBroker {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let temp = match tree() {
            Some(root) => root.join("tmp"),
            None => std::env::temp_dir(),
        };
        let dir = temp.join(format!("guirpc-broker-{test}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let broker = PrivateBroker {
            node: format!("guirpc-{test}-{id}@localhost"),
            port: free_port(),
            dist_port: free_port(),
            tls_port: (tls != Tls::None).then(free_port),
            dir,
        };
        let mut conf = format!(
            "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
            broker.port
        );
        if let Some(tls_port) = broker.tls_port {
            broker.make_certificates();
            let dir = seen_by_broker(&broker.dir);
            let dir = dir.display();
            conf.push_str(&format!(
                "listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {dir}/ca.pem\n\
                 ssl_options.certfile = {dir}/server.pem\n\
                 ssl_options.keyfile = {dir}/server.key\n\
                 ssl_options.fail_if_no_peer_cert = false\n"
            ));
            if tls == Tls::ClientCertificates {
                conf.push_str(
                    "ssl_options.verify = verify_peer\n\
                     auth_mechanisms.1 = PLAIN\n\
                     auth_mechanisms.2 = AMQPLAIN\n\
                     auth_mechanisms.3 = EXTERNAL\n\
                     ssl_cert_login_from = common_name\n",
                );
            } else {
                conf.push_str("ssl_options.verify = verify_none\n");
            }
        }
        // The channel's tick, when it checks its deliveries' age, has no rabbitmq.conf key.
        let mut advanced = String::from("[{rabbit, [");
        if let Some(timeout) = consumer_timeout {
            conf.push_str(&format!("consumer_timeout = {}\n", timeout.as_millis()));
            advanced.push_str("{channel_tick_interval, 1000}");
        }
        advanced.push_str("]}].\n");
        std::fs::write(broker.dir.join("advanced.config"), advanced).unwrap();
        std::fs::write(broker.dir.join("rabbitmq.conf"), conf).unwrap();
        std::fs::write(broker.dir.join("env.conf"), "").unwrap();
        let plugins = if tls == Tls::ClientCertificates {
            "[rabbitmq_auth_mechanism_ssl].\n"
        } else {
            "[].\n"
        };
        std::fs::write(broker.dir.join("enabled_plugins"), plugins).unwrap();
        if let Some(cookie) = cookie {
            // The nodes of a cluster share one Erlang cookie; rabbitmqctl reads it too.
            use std::os::unix::fs::PermissionsExt;
            let path = broker.dir.join("home").join(".erlang.cookie");
            std::fs::write(&path, cookie).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let status = broker
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("rabbitmq-server runs");
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        broker
    }

    fn command(&self, name: &str) -> Command {
        let mut command = script(name);
        let dir = &seen_by_broker(&self.dir);
        command
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command
    }

    /// The node's Erlang name, `name@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's AMQP URI.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's `amqps://` URI, when started with TLS.
    pub fn tls_uri(&self) -> String {
        let port = self.tls_port.expect("the broker was started without TLS");
        format!("amqps://guest:guest@127.0.0.1:{port}/%2f")
    }

    /// The PEM file of the CA that signed the node's certificate.
    pub fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// Runs `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut command = self.command("rabbitmqctl");
        command.arg("-n").arg(&self.node);
        run_ctl(command, args)
    }

    /// The node's RabbitMQ version, `3.10.8` or `4.0.5`.
    pub fn version(&self) -> String {
        let output = self.ctl(&["version"]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Whether the node's RabbitMQ gives a queue declared with `x-consumer-timeout` a
    /// consumer timeout of its own (3.12 and later).
    pub fn honours_queue_consumer_timeouts(&self) -> bool {
        let version = self.version();
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (3, 12)
    }

    /// Closes every client connection, as an operator or a network fault would.
    pub fn close_all_connections(&self) {
        self.ctl(&["close_all_connections", "closed by a guirpc test"]);
    }

    /// The connections whose name contains `name`, by their client-given names.
    pub fn connection_names(&self) -> Vec<String> {
        let output = self.ctl(&[
            "list_connections",
            "client_properties",
            "--no-table-headers",
            "--quiet",
        ]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                const KEY: &str = "{\"connection_name\",\"";
                let start = line.find(KEY)? + KEY.len();
                Some(line[start..].split('"').next()?.to_owned())
            })
            .collect()
    }

    /// Closes the connections whose client-given name is `name`.
    pub fn close_connections_named(&self, name: &str) -> usize {
        close_named(|args| self.ctl(args), name)
    }

    /// Messages in a queue, ready or delivered and not yet acknowledged.
    pub fn queue_depth(&self, queue: &str) -> Option<u64> {
        self.queue_count(queue, "messages")
    }

    /// Messages of a queue delivered to a consumer and not yet acknowledged.
    pub fn unacknowledged(&self, queue: &str) -> Option<u64> {
        self.queue_count(queue, "messages_unacknowledged")
    }

    fn queue_count(&self, queue: &str, column: &str) -> Option<u64> {
        let output = self.ctl(&[
            "list_queues",
            "name",
            column,
            "--no-table-headers",
            "--quiet",
        ]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == queue).then(|| fields.next()?.parse().ok())?
            })
    }

    /// Stops the broker application (the Erlang node stays up), closing every connection.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    /// Starts the broker application again and waits until it has booted.
    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.wait_booted(Duration::from_secs(60));
    }

    /// Raises (or clears) the memory alarm: the broker blocks publishing connections.
    pub fn memory_alarm(&self, raised: bool) {
        self.ctl(&[
            "set_vm_memory_high_watermark",
            if raised { "0" } else { "0.4" },
        ]);
    }

    /// Whether the node accepts AMQP connections now.
    pub fn accepting(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// Waits until the node has booted. Accepting connections is not enough: RabbitMQ
    /// opens its listeners a moment before the last of its boot steps, and RabbitMQ 4.0
    /// drops direct replies published in that moment (seen: the first calls of a test,
    /// made tens of milliseconds before "Server startup complete", never answered).
    fn wait_booted(&self, limit: Duration) {
        let started = Instant::now();
        self.wait_accepting(limit);
        let timeout = limit.saturating_sub(started.elapsed()).as_secs().max(1);
        self.ctl(&["await_startup", "--timeout", &timeout.to_string()]);
    }

    fn wait_accepting(&self, limit: Duration) {
        assert!(
            crate::until_blocking(limit, || self.accepting()),
            "the private broker {} did not accept connections within {limit:?}",
            self.node
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .arg("shutdown")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the shared broker's `rabbitmqctl` (`$GUIRPC_TEST_CTL`, or the machine's): for a
/// test's dealings with its own connections and queues, never the broker's state.
pub fn shared_ctl(args: &[&str]) -> Output {
    let ctl = std::env::var("GUIRPC_TEST_CTL").unwrap_or_else(|_| "rabbitmqctl".into());
    run_ctl(Command::new(ctl), args)
}

/// Runs a `rabbitmqctl` command with `args`, and says what it said if it failed.
fn run_ctl(mut command: Command, args: &[&str]) -> Output {
    let output = command.args(args).output().expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Closes the shared broker's connections whose client-given name is `name` (a test's own,
/// named after its unique queue), as an operator or a network fault would.
pub fn close_shared_connections_named(name: &str) -> usize {
    close_named(shared_ctl, name)
}

/// Closes the connections named `name` through `ctl`; how many.
fn close_named(ctl: impl Fn(&[&str]) -> Output, name: &str) -> usize {
    let output = ctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "--no-table-headers",
        "--quiet",
    ]);
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let pids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect();
    for pid in &pids {
        ctl(&["close_connection", pid, "closed by a guirpc test"]);
    }
    pids.len()
}

/// A cluster of private nodes: one Erlang cookie, every node joined to the first. Its nodes
/// shut down with it.
#[derive(Debug)]
pub struct PrivateCluster {
    pub nodes: Vec<PrivateBroker>,
}

impl PrivateCluster {
    /// Starts `size` nodes and forms a cluster of them.
    pub fn start(test: &str, size: usize) -> PrivateCluster {
        let cookie = format!("GUIRPCCLUSTER{}{}", std::process::id(), fastrand_u64());
        let nodes: Vec<PrivateBroker> = (0..size)
            .map(|i| {
                PrivateBroker::start_node(&format!("{test}-{i}"), Tls::None, Some(&cookie), None)
            })
            .collect();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", &nodes[0].node]);
            node.start_app();
        }
        let cluster = PrivateCluster { nodes };
        cluster.wait_running(size, Duration::from_secs(60));
        cluster
    }

    /// Every node's URI, comma-separated: what `broker.uri` takes.
    pub fn uris(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateBroker::uri)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node that leads the quorum queue `queue`, by its index.
    pub fn leader_of(&self, queue: &str) -> Option<usize> {
        let alive = self.nodes.iter().find(|n| n.accepting())?;
        let output = alive.ctl(&[
            "list_queues",
            "name",
            "leader",
            "--no-table-headers",
            "--quiet",
        ]);
        let leader = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == queue).then(|| fields.next().map(str::to_owned))?
            })?;
        self.nodes.iter().position(|n| n.node == leader)
    }

    /// Waits until `count` nodes run the broker, as the first running node sees it.
    pub fn wait_running(&self, count: usize, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(node) = self.nodes.iter().find(|n| n.accepting()) {
                let output = node.ctl(&["cluster_status", "--formatter", "json"]);
                let text = String::from_utf8_lossy(&output.stdout);
                let running = text
                    .split("\"running_nodes\":[")
                    .nth(1)
                    .and_then(|rest| rest.split(']').next())
                    .map_or(0, |list| list.matches('@').count());
                if running >= count {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the cluster did not have {count} running nodes within {limit:?}");
    }
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
