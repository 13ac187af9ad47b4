//! A private RabbitMQ node for tests that break their broker on purpose (close its
//! connections, restart it, raise alarms): the installed `rabbitmq-server`, started on free
//! ports with its own node name, data directory and Erlang cookie, and shut down on drop.
//! It never touches the shared broker on 5672.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running private node.
#[derive(Debug)]
pub struct PrivateBroker {
    node: String,
    dir: PathBuf,
    port: u16,
    dist_port: u16,
}

/// Where the installed RabbitMQ keeps its scripts, bypassing the wrapper that would switch
/// to the `rabbitmq` user and read the shared node's configuration.
fn script(name: &str) -> PathBuf {
    let direct = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if direct.exists() {
        direct
    } else {
        PathBuf::from(name)
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
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("guirpc-broker-{test}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let broker = PrivateBroker {
            node: format!("guirpc-{test}-{id}@localhost"),
            port: free_port(),
            dist_port: free_port(),
            dir,
        };
        std::fs::write(
            broker.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
                broker.port
            ),
        )
        .unwrap();
        std::fs::write(broker.dir.join("env.conf"), "").unwrap();
        std::fs::write(broker.dir.join("enabled_plugins"), "[].\n").unwrap();
        let status = broker
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("rabbitmq-server runs");
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        broker.wait_accepting(Duration::from_secs(60));
        broker
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(script(name));
        let dir = &self.dir;
        command
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command
    }

    /// The node's AMQP URI.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let output = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
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
        let output = self.ctl(&[
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
            self.ctl(&["close_connection", pid, "closed by a guirpc test"]);
        }
        pids.len()
    }

    /// Messages ready in a queue.
    pub fn queue_depth(&self, queue: &str) -> Option<u64> {
        let output = self.ctl(&[
            "list_queues",
            "name",
            "messages",
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

    /// Starts the broker application again and waits until it accepts connections.
    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.wait_accepting(Duration::from_secs(60));
    }

    /// Raises (or clears) the memory alarm: the broker blocks publishing connections.
    pub fn memory_alarm(&self, raised: bool) {
        self.ctl(&[
            "set_vm_memory_high_watermark",
            if raised { "0" } else { "0.4" },
        ]);
    }

    fn wait_accepting(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
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
