//! Many hosts on one machine: a Linux network namespace per host, each joined to a bridge in the
//! root namespace by a veth pair, so every process of a multi-host test has its own address, its
//! own loopback and a link that can be cut (`ip link set … down`) or lose every process at once
//! (`kill -9` of every pid in the namespace).
//!
//! The root namespace (the test itself, the `dramaq` CLI) reaches every host through the bridge's
//! address. Names carry the test process's pid and a counter, so tests running in parallel (and
//! other test runs) never collide; [`Net`]'s `Drop` kills what runs in its namespaces and deletes
//! them and the bridge, also when a test panics. Namespaces left behind by a run that was killed
//! outright (no `Drop`) are deleted by the next [`Net::new`] once their pid is gone.
//!
//! Needs root and iproute2 (`ip`); [`Net::unavailable`] says why a machine cannot run it.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace and link this fixture creates.
const PREFIX: &str = "dq";

/// One simulated host: a namespace with one interface (`eth0`) on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The namespace (`ip netns exec <ns> …`).
    pub ns: String,
    /// The host's address on the bridge.
    pub ip: String,
    /// The root-namespace end of its veth pair: setting it down cuts the host off.
    link: String,
}

/// A bridge and the hosts on it.
pub struct Net {
    bridge: String,
    /// `10.a.b`: the bridge is `.1`, hosts `.2` and up.
    subnet: String,
    tag: String,
    hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete namespaces and bridges of earlier runs whose process is gone.
fn sweep_stale() {
    let owner = |name: &str| -> Option<u32> {
        name.strip_prefix(PREFIX)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner(name).is_some_and(|p| !pid_alive(p)) {
                kill_all_in(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show", "type", "bridge"]) {
        for name in list.lines().filter_map(|l| l.split(": ").nth(1)) {
            if owner(name).is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// SIGKILL every process in namespace `ns`; returns how many there were.
fn kill_all_in(ns: &str) -> usize {
    let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
    let mut n = 0;
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) has no memory effects; a pid that already exited gives ESRCH.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        n += 1;
    }
    n
}

impl Net {
    /// Why this machine cannot build namespaces (not root, no `ip`), or `None` when it can.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root (CI runs as root)".into());
        }
        match Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => None,
            _ => Some("`ip` (iproute2) is not installed: apt-get install -y iproute2".into()),
        }
    }

    /// A fresh bridge with a /24 of its own.
    pub fn new() -> Result<Net> {
        sweep_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}x{n}");
        let bridge = format!("{PREFIX}{tag}br");
        if bridge.len() > 15 {
            bail!("interface name {bridge} too long");
        }
        // A subnet no route uses yet, derived from the pid and counter so parallel runs differ.
        let mut subnet = None;
        for k in 0..64u32 {
            let a = 64 + (pid + k) % 128;
            let b = (n * 7 + k * 13) % 250 + 1;
            let candidate = format!("10.{a}.{b}");
            let routes = ip(&["-4", "route", "show", &format!("{candidate}.0/24")])?;
            if routes.trim().is_empty() {
                subnet = Some(candidate);
                break;
            }
        }
        let subnet = subnet.context("no free 10.x.y.0/24 for the test bridge")?;
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let net = Net {
            bridge,
            subnet,
            tag,
            hosts: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &net.bridge,
        ])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    /// A new host on the bridge, named `name` in test output.
    pub fn host(&mut self, name: &str) -> Result<Host> {
        let k = self.hosts.len() + 2;
        if k > 250 {
            bail!("too many hosts on one bridge");
        }
        let ns = format!("{PREFIX}{}-{name}", self.tag);
        let link = format!("{PREFIX}{}v{k}", self.tag);
        if link.len() > 15 {
            bail!("interface name {link} too long");
        }
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            ip: format!("{}.{k}", self.subnet),
            link: link.clone(),
        };
        ip(&["netns", "add", &ns])?;
        // Registered before the links exist, so Drop deletes the namespace on any error below.
        self.hosts.push(host.clone());
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &link, "master", &self.bridge, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["-n", ns.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
        in_ns(&["link", "set", "eth0", "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns]).arg(program);
        cmd
    }

    /// The whole host dies: SIGKILL to every process in it. Returns how many were killed.
    pub fn kill_host(&self, host: &Host) -> usize {
        kill_all_in(&host.ns)
    }

    /// Pull (`false`) or plug back (`true`) the host's network cable. Down, packets to and from
    /// it are dropped (no reset): its peers see silence, as with a real partition.
    pub fn set_link(&self, host: &Host, up: bool) -> Result<()> {
        ip(&["link", "set", &host.link, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// The bridge's (root namespace's) address, as hosts see it.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            kill_all_in(&h.ns);
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
