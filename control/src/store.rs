//! The running configuration: the document, its generation, and the file
//! that keeps both across restarts.
//!
//! `config.json` in the state directory holds `{"generation", "config"}`
//! with the keys, mode 0600. It is replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, and the directory
//! fsynced, so a crash leaves either the old or the new document.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use braid_config::{Config, HexSecret};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a GET shows instead of a key or salt. Sent back in a PUT, it
/// stands for the stored value of the same SA.
pub const REDACTED: &str = "<redacted>";

/// Name of the persisted document in the state directory.
pub const STATE_FILE: &str = "config.json";

/// The running document and its generation (0: none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Running {
    pub generation: u64,
    pub config: Option<Config>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Uses `dir`, creating it (0700) if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<StateDir, StoreError> {
        let dir = dir.into();
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        }
        Ok(StateDir { dir })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The persisted state, or the empty state if there is none. A file
    /// that does not parse or validate is an error: starting empty would
    /// push an empty generation over a working dataplane.
    pub fn load(&self) -> Result<Running, StoreError> {
        let path = self.file();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Running::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let running: Running = serde_json::from_slice(&text)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if let Some(c) = &running.config {
            braid_config::Tables::from_config(c).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!(
                    "the saved configuration does not validate (with a rule this version added?): {e}; \
                     correct the file, or move it away and start from --init-config"
                ),
            })?;
        }
        Ok(running)
    }

    /// Replaces the persisted state atomically (write, fsync, rename,
    /// fsync the directory).
    pub fn save(&self, running: &Running) -> Result<(), StoreError> {
        let path = self.file();
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let text = serde_json::to_vec_pretty(running).expect("a Running always serializes");
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        // From here the new state is the file a restart loads: an error
        // now must not be answered as "nothing changed".
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            eprintln!(
                "braid-control: {}: fsync after saving generation {}: {e} (saved; a power loss now may bring back the one before)",
                self.dir.display(),
                running.generation
            );
        }
        Ok(())
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Every key and salt of `config` replaced by [`REDACTED`].
pub fn redact(config: &mut Config) {
    for b in &mut config.bundles {
        redact_bundle(b);
    }
}

pub fn redact_bundle(b: &mut braid_config::BundleConfig) {
    for t in &mut b.tunnels {
        for s in [&mut t.key_out, &mut t.key_in, &mut t.salt_out, &mut t.salt_in] {
            *s = HexSecret(REDACTED.to_string());
        }
    }
}

/// Replaces each [`REDACTED`] key or salt of `candidate` by the stored one
/// of the same SA in `current`: the inbound SA of a tunnel is found by
/// bundle name and `spi_in`, the outbound one by bundle name and
/// `spi_out`. A placeholder with no stored SA behind it is refused.
pub fn restore_secrets(candidate: &mut Config, current: Option<&Config>) -> Result<(), ApiError> {
    let placeholder = |t: &braid_config::TunnelConfig| [&t.key_in, &t.salt_in, &t.key_out, &t.salt_out].iter().any(|s| s.0 == REDACTED);
    // Looked up only for the tunnels that hold a placeholder (a scan of
    // every stored bundle and tunnel for each made a large document's
    // every change quadratic; found by review).
    let by_name: std::collections::HashMap<&str, &braid_config::BundleConfig> =
        current.map(|c| c.bundles.iter().map(|s| (s.name.as_str(), s)).collect()).unwrap_or_default();
    for (b, bundle) in candidate.bundles.iter_mut().enumerate() {
        if !bundle.tunnels.iter().any(placeholder) {
            continue;
        }
        let stored = by_name.get(bundle.name.as_str()).copied();
        // The stored tunnels by SPI, first of each as a scan would find.
        let (mut spi_in, mut spi_out) = (std::collections::HashMap::new(), std::collections::HashMap::new());
        for s in stored.iter().flat_map(|s| s.tunnels.iter()) {
            spi_in.entry(s.spi_in).or_insert(s);
            spi_out.entry(s.spi_out).or_insert(s);
        }
        for (t, tunnel) in bundle.tunnels.iter_mut().enumerate() {
            if !placeholder(tunnel) {
                continue;
            }
            let at = |f: &str| format!("bundles[{b}].tunnels[{t}].{f}");
            let by_in = spi_in.get(&tunnel.spi_in).copied();
            let by_out = spi_out.get(&tunnel.spi_out).copied();
            let fields: [(&str, &mut HexSecret, Option<&HexSecret>, &str); 4] = [
                ("key_in", &mut tunnel.key_in, by_in.map(|s| &s.key_in), "spi_in"),
                ("salt_in", &mut tunnel.salt_in, by_in.map(|s| &s.salt_in), "spi_in"),
                ("key_out", &mut tunnel.key_out, by_out.map(|s| &s.key_out), "spi_out"),
                ("salt_out", &mut tunnel.salt_out, by_out.map(|s| &s.salt_out), "spi_out"),
            ];
            for (name, value, stored, spi) in fields {
                if value.0 != REDACTED {
                    continue;
                }
                match stored {
                    Some(s) => *value = s.clone(),
                    None => {
                        return Err(ApiError::field(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            at(name),
                            format!(
                                "{REDACTED:?} stands for a stored {name}, but bundle {:?} has no stored tunnel with this {spi}",
                                bundle.name
                            ),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_example() -> Config {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```json\n").expect("a ```json block") + "```json\n".len();
        let len = doc[start..].find("```").expect("end of the json block");
        Config::from_json_str(&doc[start..start + len]).expect("the documented example")
    }

    /// A bundle of 50,000 tunnels sent back with every key redacted: each
    /// placeholder gets its stored value, found by SPI, without a scan of
    /// the stored tunnels for each (found by review: quadratic).
    #[test]
    fn redacted_keys_of_many_tunnels_are_restored() {
        let mut current = doc_example();
        let t0 = current.bundles[0].tunnels[0].clone();
        current.bundles[0].tunnels = (0..50_000u32)
            .map(|i| {
                let mut t = t0.clone();
                (t.spi_in, t.spi_out) = (0x1000 + i, 0x9000_0000 + i);
                t.key_out = HexSecret(format!("{:064x}", i + 1));
                t
            })
            .collect();
        let mut candidate = current.clone();
        redact(&mut candidate);
        let start = std::time::Instant::now();
        restore_secrets(&mut candidate, Some(&current)).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
        for (got, want) in candidate.bundles[0].tunnels.iter().zip(&current.bundles[0].tunnels) {
            assert_eq!(got.key_out.0, want.key_out.0);
        }
        // A placeholder with no stored SA behind it: refused.
        candidate.bundles[0].tunnels[7].spi_out = 1;
        candidate.bundles[0].tunnels[7].key_out = HexSecret(REDACTED.to_string());
        assert!(restore_secrets(&mut candidate, Some(&current)).is_err());
    }
}
