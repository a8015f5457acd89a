//! Keeps the embedded DNS in step with the model: after every change (and
//! at start-up) the daemon calls [`DnsSync::sync`], which derives the
//! records, opens and closes listeners, and writes and removes the
//! sandboxes' resolv.conf files.
//!
//! The DNS is a projection of the model, not part of a request: a request
//! succeeds or fails on its devices and its store write alone, and the
//! projection follows once it has been committed. A listener that cannot
//! be opened is logged and tried again at the next sync, as Docker logs a
//! resolver that fails to start and runs the container anyway
//! (libnetwork `sandbox_dns_unix.go`, `startResolver`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dns::{Records, ResolvConf, SandboxId};

use crate::control::{Model, Touched};
use crate::dnsd::Dnsd;
use crate::dnsd::records::{self, SandboxIds};

/// Where the host's resolver configuration lives.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// systemd-resolved's full list, read instead of a host file that names
/// only its stub (docker-reference §6.2).
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// Where the embedded DNS takes its inputs from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPaths {
    /// The host's resolv.conf ([`HOST_RESOLV_CONF`]).
    pub host_resolv_conf: PathBuf,
    /// Where sandboxes' resolv.conf files go
    /// ([`records::ETC_NETNS`]).
    pub etc_netns: PathBuf,
    /// The daemon's `--dns`, `--dns-search` and `--dns-option`.
    pub settings: dns::resolv_conf::DnsSettings,
}

impl Default for DnsPaths {
    fn default() -> Self {
        Self {
            host_resolv_conf: PathBuf::from(HOST_RESOLV_CONF),
            etc_netns: PathBuf::from(records::ETC_NETNS),
            settings: dns::resolv_conf::DnsSettings::default(),
        }
    }
}

/// The daemon's side of the embedded DNS.
#[derive(Debug)]
pub struct DnsSync {
    dnsd: Dnsd,
    paths: DnsPaths,
    ids: SandboxIds,
    /// Sandboxes (model id) whose listeners are open.
    listening: HashMap<String, SandboxId>,
    /// resolv.conf files written (model id → path and contents).
    written: HashMap<String, (PathBuf, String)>,
    /// The records last handed to the DNS thread.
    records: Arc<Records>,
    /// The host's resolv.conf as read at the last full sync.
    host: Option<String>,
    /// Containers on other hosts (the etcd control plane).
    remote: Vec<crate::cluster::RemoteName>,
}

impl DnsSync {
    /// Drives `dnsd`.
    #[must_use]
    pub fn new(dnsd: Dnsd, paths: DnsPaths) -> Self {
        Self {
            dnsd,
            paths,
            ids: SandboxIds::new(),
            listening: HashMap::new(),
            written: HashMap::new(),
            records: Arc::new(Records::new()),
            host: None,
            remote: Vec::new(),
        }
    }

    /// The names of containers on other hosts, served on the overlay
    /// networks of the same name from the next [`Self::sync`] on.
    pub fn set_remote(&mut self, remote: Vec<crate::cluster::RemoteName>) {
        self.remote = remote;
    }

    /// The DNS thread's handle.
    #[must_use]
    pub const fn dnsd(&self) -> &Dnsd {
        &self.dnsd
    }

    /// The records the DNS thread was last given (empty before the first
    /// [`Self::sync`]).
    #[must_use]
    pub fn records(&self) -> Arc<Records> {
        Arc::clone(&self.records)
    }

    /// The host's resolv.conf text, as Docker picks it: the configured
    /// file, or systemd-resolved's full list when the default file names
    /// only its stub. A file that cannot be read counts as empty.
    fn host_resolv_conf(&self) -> String {
        let path = &self.paths.host_resolv_conf;
        let text = fs::read_to_string(path).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the host resolv.conf");
            String::new()
        });
        if path == Path::new(HOST_RESOLV_CONF)
            && ResolvConf::parse(&text).is_systemd_stub()
            && let Ok(full) = fs::read_to_string(SYSTEMD_RESOLV_CONF)
        {
            return full;
        }
        text
    }

    /// Brings the DNS in line with `model` after changes that touched only
    /// what `touched` names: when no network or user-network endpoint
    /// changed and the host's resolv.conf reads as at the last sync, the
    /// records and listeners stand and only the touched sandboxes'
    /// resolv.conf files are written or removed; otherwise, as
    /// [`Self::sync`]. So a sandbox created, connected to the default
    /// `bridge` or removed costs the same with a thousand sandboxes as with
    /// one.
    pub fn sync_touched(&mut self, model: &Model, touched: &Touched) {
        let host = self.host_resolv_conf();
        if touched.networks || self.host.as_deref() != Some(host.as_str()) {
            return self.sync_with(model, host);
        }
        let confs = records::ResolvConfs::new(&host, &self.paths.settings);
        for id in &touched.sandboxes {
            let Some(sb) = model.sandbox(id) else {
                // Its listeners went with its last user-network endpoint,
                // which marks the networks touched; only its file is left.
                self.ids.forget(id);
                if let Some((path, _)) = self.written.remove(id) {
                    remove_resolv_conf(&path);
                }
                continue;
            };
            self.ids.get_or_assign(id);
            let served = model
                .sandbox_endpoints(id)
                .any(|e| model.network(e.network).is_some_and(|n| !n.builtin));
            if let Some(file) = confs.file(&self.paths.etc_netns, sb, served) {
                self.write(file);
            }
        }
    }

    /// Writes one sandbox's resolv.conf unless it is already written as it
    /// should be, removing the file it had at another path.
    fn write(&mut self, file: records::ResolvConfFile) {
        let entry = (file.path, file.contents);
        if self.written.get(&file.sandbox) == Some(&entry) {
            return;
        }
        if let Err(e) = write_resolv_conf(&entry.0, &entry.1) {
            // Whatever was there stays, and is tried again next time.
            tracing::warn!(path = %entry.0.display(), error = %e, "resolv.conf not written");
            return;
        }
        if let Some((old, _)) = self.written.get(&file.sandbox)
            && *old != entry.0
        {
            remove_resolv_conf(old);
        }
        self.written.insert(file.sandbox, entry);
    }

    /// Brings the records, listeners and resolv.conf files in line with
    /// `model`. Failures are logged; what failed is tried again next time.
    pub fn sync(&mut self, model: &Model) {
        let host = self.host_resolv_conf();
        self.sync_with(model, host);
    }

    fn sync_with(&mut self, model: &Model, host: String) {
        self.ids.sync(model);
        let mut plan = records::build(
            model,
            &self.ids,
            &host,
            &self.paths.settings,
            &self.paths.etc_netns,
        );
        records::add_remote(&mut plan.records, model, &self.remote);

        // Records first, so a new listener's first query finds its sandbox.
        self.records = Arc::new(plan.records);
        if let Err(e) = self.dnsd.set_records(Arc::clone(&self.records)) {
            tracing::error!(error = %e, "dns thread gone: records not updated");
        }
        let wanted: HashMap<&str, SandboxId> = plan
            .listeners
            .iter()
            .map(|l| (l.sandbox.as_str(), l.id))
            .collect();
        let stale: Vec<(String, SandboxId)> = self
            .listening
            .iter()
            .filter(|(sb, id)| wanted.get(sb.as_str()) != Some(id))
            .map(|(sb, id)| (sb.clone(), *id))
            .collect();
        for (sb, id) in stale {
            if let Err(e) = self.dnsd.remove_sandbox(id) {
                tracing::error!(error = %e, "dns thread gone: listeners not closed");
            }
            self.listening.remove(&sb);
        }
        for l in &plan.listeners {
            if self.listening.contains_key(&l.sandbox) {
                continue;
            }
            match self.dnsd.add_sandbox(l.id, &l.netns) {
                Ok(at) => {
                    tracing::info!(netns = %l.netns.display(), udp = %at.udp, "embedded dns listening");
                    self.listening.insert(l.sandbox.clone(), l.id);
                }
                Err(e) => {
                    tracing::error!(netns = %l.netns.display(), error = %e, "embedded dns not started for the sandbox");
                }
            }
        }

        let mut keep: HashMap<String, (PathBuf, String)> = HashMap::new();
        for f in plan.resolv_confs {
            let entry = (f.path, f.contents);
            if self.written.get(&f.sandbox) != Some(&entry) {
                if let Err(e) = write_resolv_conf(&entry.0, &entry.1) {
                    tracing::warn!(path = %entry.0.display(), error = %e, "resolv.conf not written");
                    // Whatever was there stays, and is tried again next time.
                    if let Some(old) = self.written.get(&f.sandbox) {
                        keep.insert(f.sandbox, old.clone());
                    }
                    continue;
                }
                if let Some((old, _)) = self.written.get(&f.sandbox)
                    && *old != entry.0
                {
                    remove_resolv_conf(old);
                }
            }
            keep.insert(f.sandbox, entry);
        }
        for (sb, (path, _)) in &self.written {
            if !keep.contains_key(sb) {
                remove_resolv_conf(path);
            }
        }
        self.written = keep;
        self.host = Some(host);
    }
}

/// Writes `contents` to `path` by renaming a finished temporary file over
/// it, creating the directory.
fn write_resolv_conf(path: &Path, contents: &str) -> io::Result<()> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no directory"))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(".resolv.conf.vswitch");
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// Removes a sandbox's resolv.conf and its directory if nothing else is
/// left in it.
fn remove_resolv_conf(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "resolv.conf not removed"),
    }
    if let Some(dir) = path.parent() {
        // Fails, as it should, when the directory holds other files.
        let _ = fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_files_are_written_and_removed_with_their_directory() {
        let root = std::env::temp_dir().join(format!("vswitch-dns-{}", std::process::id()));
        let path = root.join("sb1").join("resolv.conf");
        write_resolv_conf(&path, "nameserver 127.0.0.11\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "nameserver 127.0.0.11\n"
        );
        write_resolv_conf(&path, "nameserver 192.0.2.1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.1\n");
        remove_resolv_conf(&path);
        assert!(!root.join("sb1").exists());
        let _ = fs::remove_dir(&root);
    }
}
