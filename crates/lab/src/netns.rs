//! Network namespaces of the netns lab (`maildr lab up --netns`): one per site
//! and one for the clients, made with `ip netns` so an operator can enter them
//! (`ip netns exec maildr0-bj ss -tn`), and removed by `lab down` or, after a
//! crash, by the next `lab up` or `lab down` of the same net.
//!
//! A process enters a namespace per thread (`setns`): the supervisor enters the
//! client namespace before it starts any thread, so every thread and child it
//! makes afterwards is a client; a site is started into its own namespace between
//! fork and exec. Nothing here touches the root namespace's interfaces.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::topology::Net;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The namespace the clients of a netns lab (supervisor, drills, tests) run in.
pub const CLIENT: &str = "client";

/// The prefix of every namespace of the lab on `net`: `maildr<B>-`.
pub fn prefix(net: Net) -> String {
    format!("maildr{}-", net.to_string().trim_start_matches("127."))
}

/// The namespace of `who` (a site name or [`CLIENT`]) in the lab on `net`.
pub fn name(net: Net, who: &str) -> String {
    format!("{}{who}", prefix(net))
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether this process may make namespaces and devices.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The namespace `name`, opened for `setns`.
pub fn open(name: &str) -> io::Result<File> {
    File::open(path(name))
}

/// Move the calling thread into the namespace `ns` (threads it starts later
/// follow it; other threads stay where they are).
pub fn set_thread(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a descriptor we hold open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Move the calling thread into namespace `name`. Call it before any thread is
/// started for the whole process to be inside.
pub fn enter(name: &str) -> Result<()> {
    let ns = open(name).with_context(|| format!("opening network namespace {name} ({})", path(name).display()))?;
    set_thread(&ns).with_context(|| format!("entering network namespace {name}"))
}

/// Whether the calling thread is in namespace `name`.
pub fn is_current(name: &str) -> bool {
    let id = |p: PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let own = id(PathBuf::from("/proc/thread-self/ns/net"));
    own.is_some() && own == id(path(name))
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().with_context(|| {
        format!("running `ip {}` (the netns lab needs iproute2: apt-get install iproute2)", args.join(" "))
    })?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Make namespace `name`.
pub fn create(name: &str) -> Result<()> {
    ip(&["netns", "add", name]).map(drop)
}

/// Remove namespace `name` (nothing to do when it is gone). Processes still in it
/// keep it alive until they exit; its devices go with it.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "delete", name]).map(drop)
}

/// The pids of the processes in namespace `name`.
pub fn pids(name: &str) -> Result<Vec<u32>> {
    Ok(ip(&["netns", "pids", name])?.split_whitespace().filter_map(|p| p.parse().ok()).collect())
}

/// Every namespace whose name starts with `prefix`, sorted.
pub fn named_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {NETNS_DIR}")),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.with_context(|| format!("listing {NETNS_DIR}"))?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Remove what a crashed lab on `net` left: every namespace with the lab's prefix
/// that no process is in. A namespace with processes belongs to a running lab,
/// and is refused with their pids. Returns the names removed.
pub fn remove_leftovers(net: Net) -> Result<Vec<String>> {
    let names = named_with_prefix(&prefix(net))?;
    for name in &names {
        let running = pids(name)?;
        if !running.is_empty() {
            bail!(
                "network namespace {name} still has processes {running:?}: another netns lab runs on --net {net}; \
                 stop it (`maildr lab down --dir …`) or choose another --net"
            );
        }
    }
    for name in &names {
        delete(name)?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_labs_net_so_two_labs_never_share_one() {
        let net: Net = "127.61".parse().unwrap();
        assert_eq!(name(net, "bj"), "maildr61-bj");
        assert_eq!(name(net, CLIENT), "maildr61-client");
        assert_eq!(prefix(Net::default()), "maildr0-");
        assert!(!name(Net::default(), "bj").starts_with(&prefix("127.61".parse().unwrap())));
    }
}
