//! What a process (this one, the servers', the broker's) has used so far, from /proc: CPU
//! time and minor page faults.

use std::time::Duration;

/// What a process has used so far, from /proc.
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    /// CPU time, user and system.
    pub(crate) cpu: Duration,
    pub(crate) minor_faults: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            minor_faults: self.minor_faults + other.minor_faults,
        }
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;

    fn sub(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            minor_faults: self.minor_faults.saturating_sub(before.minor_faults),
        }
    }
}

pub(crate) fn usage(pid: &str) -> Usage {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Usage::default();
    };
    // The fields after the command name, which may hold spaces, closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    Usage {
        cpu: Duration::from_millis((field(11) + field(12)) * 10),
        minor_faults: field(7),
    }
}

/// The broker's process, when exactly one RabbitMQ node runs here.
pub(crate) fn broker_pid() -> Option<String> {
    let nodes: Vec<String> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
        .collect();
    (nodes.len() == 1).then(|| nodes[0].clone())
}
