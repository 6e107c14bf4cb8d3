//! Outbound SAs across snapshots and across restarts.
//!
//! [`SaRegistry`] keeps every outbound SA the process created, by (SPI,
//! key, salt): a tunnel that reappears in a new snapshot with the same key
//! continues its sequence counter (restarting it would repeat GCM nonces).
//!
//! With a state file ([`SaRegistry::with_state`]) sequence numbers also
//! survive a restart of the process, the way a manually keyed IPsec SA
//! must (RFC 4303 section 3.3.3): the file holds, per SA, a *mark* that no
//! number in use has reached. A new SA starts at its mark (or 1) and the
//! mark is moved [`AHEAD`] numbers past it, on disk (fsync) before any
//! packet uses the SA. [`SaRegistry::refresh`] (every 100 ms from a keeper
//! thread, [`spawn_keeper`]) moves a mark again whenever the counter gets
//! within half of `AHEAD` of it. A restarted dataplane therefore never
//! reuses a number, and its first numbers are less than 2^31 ahead of the
//! last ones the peer saw, so the peer's ESN inference and replay window
//! (RFC 4303 appendix A) accept them.
//!
//! The file also keeps, per inbound SA, the highest sequence number its
//! replay window accepted (*high*), so that a restarted dataplane does not
//! accept once more every packet an attacker captured before the restart.
//! The tunnel's owner publishes its window's top into the SA's
//! [`SaRegistry::inbound_highs`] cell once a millisecond, before it applies
//! new tables and when it stops; the keeper writes highs that moved at
//! most once a second, and at exit. A new inbound SA's window starts above
//! its high (also a window new tables rebuild, raised when they are
//! applied). After a clean stop (SIGTERM) nothing it accepted is accepted
//! again; after a crash, only what it accepted in its last second or so
//! can be replayed once. An older braid-dataplane refuses a file with
//! highs (`in` lines): delete those lines to go back to one.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shm::proto::fnv1a;
use braid_tunnel::sa::{OutboundSa, OutboundSaPair, SaParams};

use crate::config::Tables;

/// How far a mark runs ahead of the counter: 2^30 numbers, 10 s of a
/// 100 Mpps tunnel, and less than half the 2^31 an ESN receiver can jump.
pub const AHEAD: u64 = 1 << 30;

/// Identifies an SA without holding its key: SPI and a hash of key and salt.
type SaId = (u32, u64);

fn sa_id(p: &SaParams) -> SaId {
    let mut b = p.key.as_bytes().to_vec();
    b.extend_from_slice(&p.salt);
    (p.spi.0, fnv1a(&b))
}

/// How often at most the keeper writes inbound highs that moved.
pub const HIGHS_EVERY: Duration = Duration::from_secs(1);

/// Every outbound SA this process created, and their marks on disk; the
/// inbound SAs' highs.
#[derive(Default)]
pub struct SaRegistry {
    sas: HashMap<SaId, Arc<OutboundSaPair>>,
    marks: HashMap<SaId, u64>,
    /// The SPI each key and salt (their hash) was first used with, in
    /// `sas` or `marks`.
    by_key: HashMap<u64, Vec<u32>>,
    /// The keys and salts (their hash) of every inbound SA seen.
    in_keys: std::collections::HashSet<u64>,
    /// Inbound SAs: the high workers publish, and the high on disk.
    highs: HashMap<SaId, (Arc<AtomicU64>, u64)>,
    highs_saved: Option<Instant>,
    state: Option<PathBuf>,
}

impl SaRegistry {
    /// A registry that keeps sequence marks in `path` (read now if it
    /// exists; a damaged file is an error, never silently reset).
    pub fn with_state(path: impl AsRef<Path>) -> Result<SaRegistry, String> {
        let path = path.as_ref().to_path_buf();
        let (mut marks, mut highs) = (HashMap::new(), HashMap::new());
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let bad = || {
                        format!("{}:{}: expected \"<spi> <key hash> <mark>\" or \"in <spi> <key hash> <high>\" in hex", path.display(), n + 1)
                    };
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let hex32 = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad());
                    let hex64 = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
                    match f[..] {
                        [spi, id, mark] => {
                            marks.insert((hex32(spi)?, hex64(id)?), hex64(mark)?);
                        }
                        ["in", spi, id, high] => {
                            let high = hex64(high)?;
                            highs.insert((hex32(spi)?, hex64(id)?), (Arc::new(AtomicU64::new(high)), high));
                        }
                        _ => return Err(bad()),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let mut by_key: HashMap<u64, Vec<u32>> = HashMap::new();
        for (spi, h) in marks.keys() {
            by_key.entry(*h).or_default().push(*spi);
        }
        let in_keys = highs.keys().map(|(_, h)| *h).collect();
        Ok(SaRegistry { sas: HashMap::new(), marks, by_key, in_keys, highs, highs_saved: None, state: Some(path) })
    }

    /// The SA for `p`: the existing one when SPI, key and salt are the
    /// same (its sequence counter continues), else a new one starting at
    /// its mark, whose new mark is on disk before this returns.
    pub fn get(&mut self, p: &SaParams) -> Result<Arc<OutboundSaPair>, String> {
        let (spi, h) = sa_id(p);
        if let Err(e) = self.key_free(spi, h) {
            return Err(format!("spi {spi:#x}: {e}"));
        }
        let (sa, new) = self.find_or_make(p);
        if new {
            self.save()?;
        }
        Ok(sa)
    }

    /// The SA for `p` and whether it is new (its mark not saved yet).
    /// `p` passed [`SaRegistry::check`].
    fn find_or_make(&mut self, p: &SaParams) -> (Arc<OutboundSaPair>, bool) {
        let id = sa_id(p);
        if let Some(sa) = self.sas.get(&id) {
            return (sa.clone(), false);
        }
        let start = self.marks.get(&id).copied().unwrap_or(1);
        let sa = Arc::new(OutboundSaPair::new(Arc::new(OutboundSa::starting_at(p, start))));
        if self.state.is_some() {
            self.marks.insert(id, start.saturating_add(AHEAD));
        }
        self.sas.insert(id, sa.clone());
        self.bind_key(id);
        (sa, true)
    }

    /// Whether an outbound SA `spi` may use the key and salt hashed `h`:
    /// not if another outbound SPI used them (its numbers), nor an inbound
    /// SA (the peer's numbers: directions swapped by mistake; found by
    /// review). Every SPI a key was seen with is kept, so a state file
    /// from before this check that holds one key under two SPIs refuses
    /// both, the same way at every start.
    fn key_free(&self, spi: u32, h: u64) -> Result<(), String> {
        if let Some(other) = self.by_key.get(&h).and_then(|v| v.iter().find(|o| **o != spi)) {
            return Err(format!("were used with outbound SPI {other:#x} before (AES-GCM nonces would repeat)"));
        }
        if self.in_keys.contains(&h) {
            let other = self.highs.keys().find(|(_, k)| *k == h).map_or(0, |(s, _)| *s);
            return Err(format!("are an inbound SA's (SPI {other:#x}): the peer's nonces under them would repeat"));
        }
        Ok(())
    }

    fn bind_key(&mut self, (spi, h): SaId) {
        let spis = self.by_key.entry(h).or_default();
        if !spis.contains(&spi) {
            spis.push(spi);
        }
    }

    /// Refuses tables with an outbound SA whose key and salt this process
    /// (or, with a state file, any earlier one) used with another SPI.
    /// GCM's nonce is the salt and the sequence number, not the SPI, and
    /// a counter is kept by SPI, key and salt: the new SA's would start
    /// again where the other's had been and repeat its nonces under the
    /// same key (found by review: a document that changed `spi_out` and
    /// kept `key_out`/`salt_out`, or swapped them between tunnels). The
    /// same SPI with its key again (a tunnel removed and re-added) is the
    /// same SA: its counter continues. Makes nothing: a refused document
    /// binds no key.
    pub fn check(&self, tables: &Tables) -> Result<(), String> {
        for (b, bundle) in tables.bundles.iter().enumerate() {
            for (t, tunnel) in bundle.tunnels.iter().enumerate() {
                let (spi, h) = sa_id(&tunnel.sa_out);
                if let Err(e) = self.key_free(spi, h) {
                    return Err(format!("bundles[{b}].tunnels[{t}]: key_out and salt_out {e}; spi_out {spi:#x} needs a new key or salt"));
                }
            }
        }
        Ok(())
    }

    /// Registers SAs built elsewhere for `tables`' tunnels (`sas` by
    /// bundle, as [`crate::gateway::outbound_sas`] makes them).
    pub fn adopt(&mut self, tables: &Tables, sas: &[Vec<Arc<OutboundSaPair>>]) {
        for (b, bundle) in tables.bundles.iter().enumerate() {
            for (t, tunnel) in bundle.tunnels.iter().enumerate() {
                let id = sa_id(&tunnel.sa_out);
                self.sas.insert(id, sas[b][t].clone());
                self.bind_key(id);
            }
        }
    }

    /// The outbound SA of every tunnel, by bundle; the marks of new ones
    /// are saved (one write) before this returns.
    pub fn for_tables(&mut self, tables: &Tables) -> Result<Vec<Vec<Arc<OutboundSaPair>>>, String> {
        // Checked whole first: a refused document makes no SA.
        self.check(tables)?;
        let mut any_new = false;
        let sas = tables
            .bundles
            .iter()
            .map(|b| {
                b.tunnels
                    .iter()
                    .map(|t| {
                        let (sa, new) = self.find_or_make(&t.sa_out);
                        any_new |= new;
                        sa
                    })
                    .collect()
            })
            .collect();
        if any_new {
            self.save()?;
        }
        Ok(sas)
    }

    /// The cell each tunnel's inbound SA publishes its replay window's top
    /// into, by bundle (the same cell for the same SPI, key and salt), and
    /// the high a new window starts above: what the file kept, or what an
    /// earlier window of this process published.
    pub fn inbound_highs(&mut self, tables: &Tables) -> Vec<Vec<Arc<AtomicU64>>> {
        for t in tables.bundles.iter().flat_map(|b| b.tunnels.iter()) {
            self.in_keys.insert(sa_id(&t.sa_in).1);
        }
        let highs = &mut self.highs;
        let mut cell = |p: &SaParams| highs.entry(sa_id(p)).or_insert_with(|| (Arc::new(AtomicU64::new(0)), 0)).0.clone();
        tables.bundles.iter().map(|b| b.tunnels.iter().map(|t| cell(&t.sa_in)).collect()).collect()
    }

    /// Moves the marks of SAs whose counters came within `AHEAD / 2` of
    /// them, and takes the inbound highs that moved when [`HIGHS_EVERY`]
    /// passed since they were last written (or `all`); writes the file if
    /// anything moved.
    pub fn refresh(&mut self, all: bool) -> Result<bool, String> {
        if self.state.is_none() {
            return Ok(false);
        }
        let mut moved = false;
        for (id, pair) in &self.sas {
            let next = pair.active().next_seq();
            let mark = self.marks.entry(*id).or_insert(0);
            if next.saturating_add(AHEAD / 2) > *mark {
                *mark = next.saturating_add(AHEAD);
                moved = true;
            }
        }
        // Highs taken now, given back if the write fails (the next
        // refresh tries again).
        let mut taken = Vec::new();
        if all || self.highs_saved.is_none_or(|t| t.elapsed() >= HIGHS_EVERY) {
            for (id, (cell, saved)) in self.highs.iter_mut() {
                let now = cell.load(Ordering::Relaxed);
                if now > *saved {
                    taken.push((*id, *saved));
                    *saved = now;
                }
            }
            if !taken.is_empty() {
                self.highs_saved = Some(Instant::now());
                moved = true;
            }
        }
        if moved {
            if let Err(e) = self.save() {
                for (id, old) in taken {
                    if let Some((_, saved)) = self.highs.get_mut(&id) {
                        *saved = old;
                    }
                }
                return Err(e);
            }
        }
        Ok(moved)
    }

    /// The high of `p`'s inbound SA on disk, if one is kept.
    pub fn saved_high(&self, p: &SaParams) -> Option<u64> {
        self.highs.get(&sa_id(p)).map(|(_, saved)| *saved)
    }

    /// The mark of `p`'s SA, if one is kept.
    pub fn mark(&self, p: &SaParams) -> Option<u64> {
        self.marks.get(&sa_id(p)).copied()
    }

    pub fn len(&self) -> usize {
        self.sas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    /// Writes the marks: temporary file, fsync, rename, fsync of the folder.
    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.state else { return Ok(()) };
        let mut text = String::new();
        let mut ids: Vec<_> = self.marks.iter().collect();
        ids.sort();
        for ((spi, id), mark) in ids {
            text.push_str(&format!("{spi:08x} {id:016x} {mark:016x}\n"));
        }
        let mut highs: Vec<_> = self.highs.iter().filter(|(_, (_, saved))| *saved > 0).collect();
        highs.sort_by_key(|(id, _)| **id);
        for ((spi, id), (_, high)) in highs {
            text.push_str(&format!("in {spi:08x} {id:016x} {high:016x}\n"));
        }
        let tmp = path.with_extension("tmp");
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

/// A thread that calls [`SaRegistry::refresh`] every 100 ms until `stop`,
/// then once more with every inbound high (set `stop` after the workers
/// published theirs). A failure to write is printed once per minute at most:
/// the dataplane keeps forwarding (the marks on disk stay valid for
/// `AHEAD / 2` more numbers per SA).
pub fn spawn_keeper(registry: Arc<Mutex<SaRegistry>>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("braid-seq".into()).spawn(move || {
        let mut last_error = None::<std::time::Instant>;
        loop {
            // Acquire: the highs the workers published before `stop`.
            let done = stop.load(Ordering::Acquire);
            let r = registry.lock().map_err(|_| "registry poisoned".to_string()).and_then(|mut r| r.refresh(done));
            if let Err(e) = r {
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    eprintln!("braid-dataplane: sequence state: {e}");
                    last_error = Some(std::time::Instant::now());
                }
            }
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tunnel::crypto::AesGcmKey;
    use braid_tunnel::sa::Spi;

    fn params(spi: u32, key: u8) -> SaParams {
        SaParams { spi: Spi(spi), key: AesGcmKey::from_slice(&[key; 16]).unwrap(), salt: [1, 2, 3, 4], packet_limit: u64::MAX }
    }

    #[test]
    fn an_unchanged_sa_keeps_its_counter() {
        let mut r = SaRegistry::default();
        let a = r.get(&params(0x100, 1)).unwrap();
        assert_eq!(a.active().reserve(10).unwrap().len(), 10);
        // Same SPI, key and salt (a weight changed, a tunnel was removed
        // and re-added): the same SA, counter continues.
        let again = r.get(&params(0x100, 1)).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.active().next_seq(), 11);
        // A new key under the same SPI is a new SA.
        let rekeyed = r.get(&params(0x100, 2)).unwrap();
        assert!(!Arc::ptr_eq(&a, &rekeyed));
        assert_eq!(r.len(), 2);
        // The same key and salt under another SPI: refused (GCM nonces
        // are salt and sequence number: they would repeat), in this
        // process and, with a state file, after a restart.
        let e = r.get(&params(0x101, 1)).map(|_| ()).unwrap_err();
        assert!(e.contains("SPI 0x100"), "{e}");
        assert_eq!(r.len(), 2);
        let dir = std::env::temp_dir().join(format!("braid-spi-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seq");
        SaRegistry::with_state(&path).unwrap().get(&params(0x300, 9)).unwrap();
        let mut again = SaRegistry::with_state(&path).unwrap();
        assert!(again.get(&params(0x301, 9)).is_err(), "after a restart too");
        assert!(again.get(&params(0x300, 9)).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Tables that would use a key and salt under a second SPI are refused
    /// whole, before any SA is made: a refused document binds no key (the
    /// corrected one, with the new tunnel's key under another SPI, is
    /// taken), and the process is not left half-configured.
    #[test]
    fn a_refused_document_makes_no_sa() {
        let json = crate::lab::config_json(false, ("net_null0", "net_null1"), "bundle", &[1, 1], 32, 1500);
        let tables = Tables::from_config(&crate::config::Config::from_json_str(&json).unwrap()).unwrap();
        let mut r = SaRegistry::default();
        r.for_tables(&tables).unwrap();
        let n = r.len();
        // Tunnel 0 gets a new key under a new SPI (fine), tunnel 1 keeps
        // its key under a new SPI (refused).
        let mut bad = tables.clone();
        bad.bundles[0].tunnels[0].sa_out = params(0x7000, 0x42);
        bad.bundles[0].tunnels[1].sa_out.spi = Spi(0x7001);
        let e = r.for_tables(&bad).map(|_| ()).unwrap_err();
        assert!(e.contains("bundles[0].tunnels[1]"), "{e}");
        assert_eq!(r.len(), n, "nothing made");
        // An inbound SA's key and salt as an outbound one (directions
        // swapped by mistake): the peer's nonces: refused too.
        r.inbound_highs(&tables);
        let mut swapped = tables.clone();
        swapped.bundles[0].tunnels[0].sa_out = tables.bundles[0].tunnels[0].sa_in.clone();
        let e = r.for_tables(&swapped).map(|_| ()).unwrap_err();
        assert!(e.contains("inbound"), "{e}");
        // Corrected: the new key under yet another SPI is taken.
        let mut good = tables.clone();
        good.bundles[0].tunnels[0].sa_out = params(0x7002, 0x42);
        r.for_tables(&good).unwrap();
        assert_eq!(r.len(), n + 1);
    }

    #[test]
    fn sequence_numbers_survive_a_restart_and_never_repeat() {
        let dir = std::env::temp_dir().join(format!("braid-seq-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seq");
        let p = params(0x200, 7);
        // First life: numbers up to 5000 used, then AHEAD/2 more.
        let used = {
            let mut r = SaRegistry::with_state(&path).unwrap();
            let sa = r.get(&p).unwrap();
            assert_eq!(sa.active().next_seq(), 1);
            assert_eq!(r.mark(&p), Some(1 + AHEAD), "mark on disk before use");
            sa.active().reserve(5000).unwrap();
            assert!(!r.refresh(false).unwrap(), "far from the mark: no write");
            // Jump the counter close to the mark (as if AHEAD/2 were used).
            let far = OutboundSa::starting_at(&p, 1 + AHEAD / 2 + 10);
            r.sas.insert(sa_id(&p), Arc::new(OutboundSaPair::new(Arc::new(far))));
            assert!(r.refresh(false).unwrap());
            assert_eq!(r.mark(&p), Some(1 + AHEAD / 2 + 10 + AHEAD));
            1 + AHEAD / 2 + 10
            // Dropped without any further write: a crash.
        };
        // Second life: starts at the mark, above every number used, less
        // than 2^31 ahead of them.
        let mut r = SaRegistry::with_state(&path).unwrap();
        let sa = r.get(&p).unwrap();
        let start = sa.active().next_seq();
        assert!(start > used && start - used < 1 << 31, "start {start}, used {used}");
        // Another SA (new key) starts at 1.
        assert_eq!(r.get(&params(0x200, 8)).unwrap().active().next_seq(), 1);
        // A damaged file is refused, not reset.
        fs::write(&path, "zz\n").unwrap();
        let Err(e) = SaRegistry::with_state(&path) else { panic!("a damaged file was accepted") };
        assert!(e.contains("expected"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inbound_highs_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("braid-high-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seq");
        // A file of the earlier format (outbound marks only) still reads.
        fs::write(&path, "00000300 0000000000000001 0000000040000001\n").unwrap();
        let json = crate::lab::config_json(false, ("net_null0", "net_null1"), "bundle", &[1, 1], 32, 1500);
        let tables = Tables::from_config(&crate::config::Config::from_json_str(&json).unwrap()).unwrap();
        let sa_in = tables.bundles[0].tunnels[0].sa_in.clone();
        {
            let mut r = SaRegistry::with_state(&path).unwrap();
            let highs = r.inbound_highs(&tables);
            assert_eq!(highs[0][0].load(Ordering::Relaxed), 0, "nothing kept yet");
            // The same SA in the next snapshot: the same cell.
            assert!(Arc::ptr_eq(&highs[0][0], &r.inbound_highs(&tables)[0][0]));
            highs[0][0].fetch_max(5000, Ordering::Relaxed);
            assert!(r.refresh(false).unwrap(), "first high written at once");
            assert_eq!(r.saved_high(&sa_in), Some(5000));
            highs[0][0].fetch_max(6000, Ordering::Relaxed);
            assert!(!r.refresh(false).unwrap(), "at most one write of highs per HIGHS_EVERY");
            assert_eq!(r.saved_high(&sa_in), Some(5000));
            assert!(r.refresh(true).unwrap(), "the last refresh takes every high");
            assert_eq!(r.saved_high(&sa_in), Some(6000));
        }
        let mut r = SaRegistry::with_state(&path).unwrap();
        assert_eq!(r.inbound_highs(&tables)[0][0].load(Ordering::Relaxed), 6000);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("00000300 0000000000000001 0000000040000001\n"), "outbound marks kept: {text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
