//! `kpki serve --check`: everything the daemon needs, verified without serving — the
//! configuration (with `KPKI__…` variables), the policy compiled, the files it reads, every
//! key reachable and signing a probe that verifies (CA keys, the token signing key, a
//! backend-held TLS key), the certificates matching their keys, and every listener's address
//! bindable (bound, then released). Nothing is written: no audit record, no socket left.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_pki::keystore::KeyStore;
use kpki_signer::Signer;

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::server::Parts;
use crate::state::State;

/// What the probe signature signs.
const PROBE: &[u8] = b"kpki serve --check: this key signs";

/// One verdict: what was checked and, when it failed, why.
#[derive(Debug)]
pub struct Verdict {
    /// What was checked (`config`, `policy`, `key CA "ca"`, `bind listen.address`, ...).
    pub item: String,
    /// `Ok(detail)` or `Err(problem)`.
    pub result: Result<String, String>,
}

impl Verdict {
    fn new(item: impl Into<String>, result: Result<String, String>) -> Verdict {
        Verdict {
            item: item.into(),
            result,
        }
    }

    /// The verdict as one line: `ok    <item>: <detail>` or `FAIL  <item>: <problem>`.
    pub fn line(&self) -> String {
        match &self.result {
            Ok(detail) => format!("ok    {}: {detail}", self.item),
            Err(problem) => format!("FAIL  {}: {problem}", self.item),
        }
    }
}

/// Checks the configuration at `config_path` for `parts`, with keys from `key_store`; every
/// verdict in order, each passed to `report` as it is reached.
pub async fn check(
    config_path: &Path,
    parts: Parts,
    key_store: fn(usize) -> KeyStore,
    mut report: impl FnMut(&Verdict),
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut push = |v: Verdict, out: &mut Vec<Verdict>| {
        report(&v);
        out.push(v);
    };
    let config = match load(config_path, parts) {
        Ok(c) => c,
        Err(e) => {
            push(Verdict::new("config", Err(e)), &mut out);
            return out;
        }
    };
    push(
        Verdict::new("config", Ok(config_path.display().to_string())),
        &mut out,
    );
    push(
        Verdict::new(
            "policy",
            Policy::compile(&config.policy)
                .map(|_| format!("{} rule(s) compiled", config.policy.len()))
                .map_err(|e| e.to_string()),
        ),
        &mut out,
    );
    for (what, path) in files(&config) {
        push(
            Verdict::new(format!("file {what}"), readable(&path)),
            &mut out,
        );
    }
    if let Some(a) = &config.audit {
        push(
            Verdict::new("audit directory", audit_dir(&a.path)),
            &mut out,
        );
    }
    let keys = key_store(config.signing.pool_size.max(1));
    let metrics = Metrics::new();
    let built = tokio::task::block_in_place(|| State::build(config.clone(), &keys, &metrics));
    match built {
        Err(e) => push(
            Verdict::new("certificates and keys", Err(e.to_string())),
            &mut out,
        ),
        Ok(state) => {
            push(
                Verdict::new(
                    "certificates and keys",
                    Ok("every certificate read, every key opened and matching".into()),
                ),
                &mut out,
            );
            for ca in state.cas.values() {
                let v = probe(&ca.key);
                push(
                    Verdict::new(format!("key CA {:?} {}", ca.name, ca.key_uri), v),
                    &mut out,
                );
            }
            if let Some(jwt) = &state.jwt {
                let v = probe(&jwt.signing);
                push(
                    Verdict::new(format!("key jwt.signing_key {}", jwt.signing_uri), v),
                    &mut out,
                );
            }
            if let Some((uri, key)) = &state.tls_key {
                push(
                    Verdict::new(format!("key listen.key {uri}"), probe(key)),
                    &mut out,
                );
            }
        }
    }
    for (what, result) in bindable(&config, parts).await {
        push(Verdict::new(format!("bind {what}"), result), &mut out);
    }
    out
}

/// The configuration, and what `parts` needs of it.
fn load(path: &Path, parts: Parts) -> Result<ServeConfig, String> {
    let config = ServeConfig::load(path).map_err(|e| e.to_string())?;
    let in_config = |e: String| format!("config {}: {e}", path.display());
    crate::server::check_parts(&config, parts).map_err(in_config)?;
    crate::limits::check_denied_rate(config.audit.as_ref())
        .map_err(|e| in_config(e.to_string()))?;
    config
        .connections
        .resolve(crate::limits::raise_fd_limit())
        .map_err(|e| in_config(e.to_string()))?;
    if let Some(k) = &config.kubernetes {
        crate::controller::Settings::from_config(k, &config)
            .map_err(|e| in_config(e.to_string()))?;
    }
    Ok(config)
}

/// The files the daemon reads at start, named by their setting.
fn files(config: &ServeConfig) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(l) = &config.listen {
        out.push(("listen.cert".to_string(), l.cert.clone()));
        if let Some(p) = l.key.as_file() {
            out.push(("listen.key".to_string(), p.to_path_buf()));
        }
        for (i, p) in l.client_cas.iter().enumerate() {
            out.push((format!("listen.client_cas[{i}]"), p.clone()));
        }
    }
    for (name, ca) in &config.cas {
        out.push((format!("cas.{name}.cert"), ca.cert.clone()));
    }
    if let Some(j) = &config.jwt {
        for (i, v) in j.verify_keys.iter().enumerate() {
            if let Some(p) = &v.public_key {
                out.push((format!("jwt.verify_keys[{i}].public_key"), p.clone()));
            }
        }
    }
    out
}

fn readable(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

/// The audit log's directory exists and the daemon may write there.
fn audit_dir(log: &Path) -> Result<String, String> {
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    rustix::fs::access(
        dir,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| format!("{}: not writable ({e})", dir.display()))?;
    Ok(dir.display().to_string())
}

/// Signs the probe message on a blocking-safe path and verifies it with the public key.
fn probe(key: &Arc<dyn Signer>) -> Result<String, String> {
    let signature = tokio::task::block_in_place(|| key.sign(PROBE)).map_err(|e| e.to_string())?;
    kpki_signer::spki::verify(key.public_key_spki(), PROBE, &signature)
        .map_err(|e| format!("probe signature does not verify: {e}"))?;
    Ok(format!("{} key signs", key.algorithm()))
}

/// Each listener address of `parts`, bound and released at once.
async fn bindable(config: &ServeConfig, parts: Parts) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    let mut tcp = Vec::new();
    if let (Some(l), Parts::All) = (&config.listen, parts) {
        tcp.push(("listen.address", l.address));
        if let Some(a) = l.ops_address {
            tcp.push(("listen.ops_address", a));
        }
    }
    if let (Some(k), Parts::All | Parts::ControllerOnly) = (&config.kubernetes, parts)
        && let Some(a) = k.ops_address
    {
        tcp.push(("kubernetes.ops_address", a));
    }
    for (what, address) in tcp {
        let result = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => {
                drop(listener);
                Ok(address.to_string())
            }
            Err(e) => Err(format!("{address}: {e}")),
        };
        out.push((what.to_string(), result));
    }
    if let (Some(j), Parts::All | Parts::JwtOnly) = (&config.jwt, parts) {
        out.push(("jwt.socket".to_string(), socket_free(&j.socket)));
    }
    out
}

/// Whether the token signer could bind `path`: free (bound at a scratch name in its
/// directory, then removed), or a stale socket nothing answers on; a live one is in use.
fn socket_free(path: &Path) -> Result<String, String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            return match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(format!("{shown}: in use (a process answers on it)")),
                Err(_) => Ok(format!("{shown} (a stale socket; replaced at start)")),
            };
        }
        Ok(_) => return Err(format!("{shown}: exists and is not a socket")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        // The daemon creates it; its nearest existing ancestor must be writable.
        let mut ancestor = dir.as_path();
        while !ancestor.exists() {
            ancestor = ancestor.parent().unwrap_or(Path::new("/"));
        }
        rustix::fs::access(ancestor, rustix::fs::Access::WRITE_OK)
            .map_err(|e| format!("{shown}: cannot create {} ({e})", dir.display()))?;
        return Ok(format!("{shown} (its directory is created at start)"));
    }
    let scratch = dir.join(format!(".kpki-check-{}.sock", std::process::id()));
    let bound = std::os::unix::net::UnixListener::bind(&scratch);
    let _ = std::fs::remove_file(&scratch);
    bound.map_err(|e| format!("{shown}: {e}"))?;
    Ok(shown.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The token signer's socket path: free, a stale socket, a live one, another kind of
    /// file, a directory still to be made.
    #[test]
    fn socket_paths_are_judged_without_being_taken() {
        let base = std::env::temp_dir().join(format!("kpki-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("scratch directory");
        let dir = Scratch(base);
        let free = dir.path().join("free.sock");
        assert!(socket_free(&free).is_ok());
        assert!(!free.exists(), "nothing left behind");
        let scratch_left = std::fs::read_dir(dir.path()).expect("read").count();
        assert_eq!(scratch_left, 0);

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let verdict = socket_free(&stale).expect("a stale socket is replaced at start");
        assert!(verdict.contains("stale"), "{verdict}");
        assert!(stale.exists(), "left alone");

        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
        let e = socket_free(&live).expect_err("in use");
        assert!(e.contains("in use"), "{e}");

        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let e = socket_free(&file).expect_err("not a socket");
        assert!(e.contains("not a socket"), "{e}");

        let later = dir.path().join("a/b/jwt.sock");
        let verdict = socket_free(&later).expect("directory made at start");
        assert!(verdict.contains("created at start"), "{verdict}");
        assert!(!dir.path().join("a").exists());
    }
}
