//! A network namespace joined to this one by a veth pair, for workers on
//! "another machine" (`ip netns`, as root). Removed on drop, with every
//! process still running inside it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace `name` whose end of the veth has `worker_ip`; the end in
/// the test's own namespace (`host_link`) has `host_ip`, both in a /24.
pub struct NetNs {
    /// The namespace's name.
    pub name: String,
    /// The veth end in the test's namespace: set it down to cut the link.
    pub host_link: String,
    /// The address of the test's end.
    pub host_ip: String,
    /// The address of the namespace's end: where its workers listen.
    pub worker_ip: String,
}

/// Runs `ip` with `args`; the error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2 (cargo xtask setup)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Creates the namespace and the link in the first subnet
    /// `10.<net>.<n>.0/24` no route uses yet; names from `tag`, the process
    /// id and a counter (unique on the machine; a link name stays within
    /// 15 bytes for a 1-byte tag). Needs root; panics saying so otherwise.
    pub fn create(tag: &str, net: u8) -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid(2) takes nothing and cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "network namespaces need root: run this test as root (CI does)"
        );
        let id = format!(
            "{tag}{}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let n = free_subnet(net);
        let ns = NetNs {
            name: format!("snakepit-{id}"),
            host_link: format!("sph{id}"),
            host_ip: format!("10.{net}.{n}.1"),
            worker_ip: format!("10.{net}.{n}.2"),
        };
        // A namespace of an earlier run killed before its cleanup.
        ns.remove();
        let worker_link = format!("spw{id}");
        let host_cidr = format!("{}/24", ns.host_ip);
        let worker_cidr = format!("{}/24", ns.worker_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.name],
            vec![
                "link",
                "add",
                &ns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &worker_link,
            ],
            vec!["link", "set", &worker_link, "netns", &ns.name],
            vec!["addr", "add", &host_cidr, "dev", &ns.host_link],
            vec!["link", "set", &ns.host_link, "up"],
            vec![
                "-n",
                &ns.name,
                "addr",
                "add",
                &worker_cidr,
                "dev",
                &worker_link,
            ],
            vec!["-n", &ns.name, "link", "set", &worker_link, "up"],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(&step) {
                drop(ns);
                panic!("{e}");
            }
        }
        ns
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Sets the link up or down (the test's end).
    pub fn link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_link,
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// The processes running in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn remove(&self) {
        for pid in self.pids() {
            crate::procfs::kill9(pid);
        }
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The first `n` in 1..=254 with no route to `10.<net>.<n>.0/24`,
/// starting from one picked by the process id.
fn free_subnet(net: u8) -> u32 {
    let start = std::process::id() % 254;
    (0..254)
        .map(|i| (start + i) % 254 + 1)
        .find(|n| {
            Command::new("ip")
                .args(["route", "show", &format!("10.{net}.{n}.0/24")])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
        })
        .unwrap_or_else(|| panic!("no free subnet 10.{net}.x.0/24 (or `ip` is missing)"))
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.remove();
    }
}
