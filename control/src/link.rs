//! The link to the dataplane over the shared-memory segment.
//!
//! The dataplane creates the segment (`Segment::create`); this process
//! opens it, owns the producing end of the commands ring and the consuming
//! end of the events ring. One thread (never an API task: a push may wait
//! on a full ring) keeps it:
//!
//! - **attach**: until the segment file exists, retry every
//!   [`RETRY`]; after attaching, read what the dataplane already said,
//!   then push the full snapshot unless the dataplane is known to run our
//!   generation *and* document: the dataplane reports both (`Applied`,
//!   the stats segment), as a control process whose state was wiped
//!   numbers a different document like the one that runs.
//! - **push**: each new generation the API publishes is sent whole
//!   (`proto::push_config`); generations only grow. Publishing faster than
//!   the dataplane applies coalesces: the latest snapshot wins.
//! - **events**: `Applied`/`Rejected` update the status; a `Hello` (a
//!   dataplane that started) triggers a full resync.
//! - **replacement**: a segment file that disappears or is replaced (new
//!   inode: the dataplane restarted) is let go, re-opened and resynced.
//!
//! The API keeps working with no dataplane attached; the status says so.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use braid_shm::proto::{self, Event};
use braid_shm::{Consumer, Producer, Ring, Segment};
use serde::Serialize;

/// How often a missing or replaced segment is looked for.
pub const RETRY: Duration = Duration::from_millis(200);
/// How long one message may wait on a full commands ring before the push
/// is abandoned (and retried later from the start).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the status shows about the dataplane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// The segment is mapped.
    pub attached: bool,
    pub segment: String,
    /// Boot id of the dataplane's last `Hello`.
    pub boot_id: Option<u64>,
    /// Last generation the dataplane reported applied (`Applied` or `Hello`).
    pub applied_generation: Option<u64>,
    /// The hash of that generation's document (`braid_shm::proto::doc_hash`),
    /// as 16 hex digits; `None` when not known.
    #[serde(serialize_with = "hex_hash")]
    pub applied_doc_hash: Option<u64>,
    /// Last generation sent whole on the current segment.
    pub pushed_generation: Option<u64>,
    /// Snapshots sent since start.
    pub pushes: u64,
    /// Full resyncs since start (attach, dataplane restart, Hello out of step).
    pub resyncs: u64,
    pub last_rejected: Option<Rejected>,
    /// Last push or attach failure.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub generation: u64,
    pub reason: String,
}

fn hex_hash<S: serde::Serializer>(h: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(&format!("{h:016x}")),
        None => s.serialize_none(),
    }
}

/// A snapshot to send: generation and document (JSON, keys included).
#[derive(Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub doc: Arc<Vec<u8>>,
    /// `proto::doc_hash(doc)`.
    pub doc_hash: u64,
}

impl Snapshot {
    pub fn new(generation: u64, doc: Vec<u8>) -> Snapshot {
        let doc_hash = proto::doc_hash(&doc);
        Snapshot { generation, doc: Arc::new(doc), doc_hash }
    }

    /// What the dataplane reports when it runs this snapshot.
    fn id(&self) -> (u64, u64) {
        (self.generation, self.doc_hash)
    }
}

struct Shared {
    desired: Option<Snapshot>,
    status: LinkStatus,
    stop: bool,
}

/// The handle the API holds.
pub struct Link {
    shared: Mutex<Shared>,
    wake: Condvar,
    path: PathBuf,
    /// The dataplane's stats segment, which tells the generation it runs.
    stats: Option<PathBuf>,
}

impl Link {
    /// Starts the link thread for the segment at `path`, with the snapshot
    /// to keep the dataplane on (`None`: nothing configured yet).
    pub fn spawn(path: PathBuf, stats: Option<PathBuf>, first: Option<Snapshot>) -> (Arc<Link>, JoinHandle<()>) {
        let status = LinkStatus { segment: path.display().to_string(), ..Default::default() };
        let link = Arc::new(Link {
            shared: Mutex::new(Shared { desired: first, status, stop: false }),
            wake: Condvar::new(),
            path,
            stats,
        });
        let l = link.clone();
        let handle = std::thread::Builder::new()
            .name("braid-link".into())
            .spawn(move || Worker::default().run(&l))
            .expect("spawning the link thread");
        (link, handle)
    }

    /// A new generation to send (replaces any not yet sent).
    pub fn publish(&self, snap: Snapshot) {
        let mut s = self.shared.lock().unwrap();
        if s.desired.as_ref().is_none_or(|d| d.generation < snap.generation) {
            s.desired = Some(snap);
        }
        self.wake.notify_all();
    }

    pub fn status(&self) -> LinkStatus {
        self.shared.lock().unwrap().status.clone()
    }

    /// The dataplane reported our snapshot `generation` applied: that
    /// generation and its document.
    pub fn in_sync(&self, generation: u64) -> bool {
        let s = self.shared.lock().unwrap();
        s.desired.as_ref().is_some_and(|d| {
            d.generation == generation && (s.status.applied_generation, s.status.applied_doc_hash) == (Some(d.generation), Some(d.doc_hash))
        })
    }

    /// Ends the thread at its next step.
    pub fn stop(&self) {
        self.shared.lock().unwrap().stop = true;
        self.wake.notify_all();
    }

    fn update(&self, f: impl FnOnce(&mut LinkStatus)) {
        let mut s = self.shared.lock().unwrap();
        f(&mut s.status);
        self.wake.notify_all();
    }
}

/// The attached segment.
struct Attached {
    _seg: Segment,
    commands: Producer,
    events: Consumer,
    /// (device, inode) of the file we mapped.
    id: (u64, u64),
    checked: Instant,
}

#[derive(Default)]
struct Worker {
    seg: Option<Attached>,
    /// The dataplane of this segment needs our snapshot.
    need_push: bool,
    /// Boot id of the dataplane we talk to.
    boot_id: Option<u64>,
    pushed: Option<u64>,
    /// A snapshot went into this segment's ring (not only guessed from the
    /// stats segment, which a crashed dataplane leaves behind).
    pushed_here: bool,
    retry_at: Option<Instant>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Worker {
    fn run(&mut self, link: &Link) {
        loop {
            let desired = {
                let s = link.shared.lock().unwrap();
                if s.stop {
                    return;
                }
                s.desired.clone()
            };
            if self.seg.is_none() && !self.attach(link) {
                self.sleep(link, RETRY);
                continue;
            }
            if !self.still_current(&link.path) {
                eprintln!("braid-control: segment {} went away or was replaced; re-attaching", link.path.display());
                self.detach(link);
                continue;
            }
            self.drain_events(link, desired.as_ref().map(Snapshot::id));
            if let Some(d) = desired {
                let behind = self.pushed.is_none_or(|p| p < d.generation);
                let retry_ok = self.retry_at.is_none_or(|t| Instant::now() >= t);
                if (self.need_push || behind) && retry_ok {
                    self.push(link, &d);
                }
            }
            self.sleep(link, Duration::from_millis(10));
        }
    }

    fn sleep(&self, link: &Link, d: Duration) {
        let s = link.shared.lock().unwrap();
        if s.stop {
            return;
        }
        let _ = link.wake.wait_timeout(s, d).unwrap();
    }

    fn attach(&mut self, link: &Link) -> bool {
        let Some(before) = file_id(&link.path) else { return false };
        let seg = match Segment::open(&link.path) {
            Ok(s) => s,
            Err(e) => {
                link.update(|s| s.last_error = Some(e.to_string()));
                return false;
            }
        };
        if file_id(&link.path) != Some(before) {
            return false; // replaced while opening: try again
        }
        let (commands, events) = match (seg.producer(Ring::Commands), seg.consumer(Ring::Events)) {
            (Ok(c), Ok(e)) => (c, e),
            (Err(e), _) | (_, Err(e)) => {
                link.update(|s| s.last_error = Some(e.to_string()));
                return false;
            }
        };
        eprintln!("braid-control: attached to {}", link.path.display());
        self.seg = Some(Attached { _seg: seg, commands, events, id: before, checked: Instant::now() });
        self.need_push = true;
        self.boot_id = None;
        self.pushed = None;
        self.pushed_here = false;
        self.retry_at = None;
        // The stats segment says which generation and document the
        // dataplane runs: a control process restarted over a running
        // dataplane resends nothing it already has.
        let ours = link.shared.lock().unwrap().desired.as_ref().map(Snapshot::id);
        let running = link
            .stats
            .as_ref()
            .and_then(|p| braid_shm::stats::StatsReader::open(p).ok())
            .map(|r| r.snapshot())
            .map(|s| (s.applied_generation, s.applied_doc_hash));
        if running.is_some() && running == ours {
            self.need_push = false;
            self.pushed = ours.map(|o| o.0);
        }
        link.update(|s| {
            s.attached = true;
            s.boot_id = None;
            s.applied_generation = running.map(|r| r.0);
            s.applied_doc_hash = running.map(|r| r.1).filter(|&h| h != 0);
            s.pushed_generation = None;
            s.last_error = None;
        });
        true
    }

    fn detach(&mut self, link: &Link) {
        self.seg = None;
        link.update(|s| {
            s.attached = false;
            s.boot_id = None;
            s.applied_generation = None;
            s.applied_doc_hash = None;
            s.pushed_generation = None;
        });
    }

    /// False when the file is gone or another file has its name.
    fn still_current(&mut self, path: &Path) -> bool {
        let Some(a) = &mut self.seg else { return false };
        if a.checked.elapsed() < RETRY {
            return true;
        }
        a.checked = Instant::now();
        file_id(path) == Some(a.id)
    }

    /// `ours`: the generation and document hash we want run.
    fn drain_events(&mut self, link: &Link, ours: Option<(u64, u64)>) {
        let Some(a) = &mut self.seg else { return };
        while let Some(msg) = a.events.try_pop() {
            match Event::from_msg(&msg) {
                Some(Event::Hello { boot_id, generation }) => {
                    let first = self.boot_id.is_none();
                    self.boot_id = Some(boot_id);
                    // A hello names no document: a dataplane that just
                    // started runs none of ours.
                    if first && self.pushed_here {
                        // The dataplane says hello before it reads the
                        // ring, so the snapshot we pushed since attaching
                        // is still ahead of it. (Not when the stats
                        // segment only suggested it runs ours: a dataplane
                        // that crashed leaves its stats file behind, and
                        // the new one says hello with nothing.)
                    } else if let Some((g, _)) = ours {
                        eprintln!("braid-control: dataplane {boot_id:#x} runs generation {generation}, ours is {g}; resyncing");
                        self.need_push = true;
                    }
                    link.update(|s| {
                        s.boot_id = Some(boot_id);
                        s.applied_generation = Some(generation);
                        s.applied_doc_hash = None;
                    });
                }
                Some(Event::Applied { generation, doc_hash }) => {
                    if Some((generation, doc_hash)) == ours && self.pushed.is_none() {
                        // An earlier control process pushed it: nothing to resend.
                        self.need_push = false;
                        self.pushed = Some(generation);
                    } else if ours.is_some_and(|(g, h)| g == generation && h != doc_hash)
                        && !self.need_push
                        && !(self.pushed_here && self.pushed == Some(generation))
                    {
                        // Our generation with another document, pushed by
                        // an earlier control process that numbered
                        // differently (its state wiped), and ours is not
                        // on its way: send ours.
                        eprintln!(
                            "braid-control: the dataplane runs generation {generation} with another document ({doc_hash:016x}); resyncing"
                        );
                        self.need_push = true;
                    }
                    link.update(|s| {
                        s.applied_generation = Some(generation);
                        s.applied_doc_hash = Some(doc_hash);
                    });
                }
                Some(Event::Rejected { generation, reason }) => {
                    eprintln!("braid-control: the dataplane rejected generation {generation}: {reason}");
                    link.update(|s| s.last_rejected = Some(Rejected { generation, reason }));
                }
                None => eprintln!("braid-control: ignoring an unknown event (kind {})", msg.kind()),
            }
        }
    }

    fn push(&mut self, link: &Link, d: &Snapshot) {
        let Some(a) = &mut self.seg else { return };
        let resync = self.need_push;
        match proto::push_config(&mut a.commands, d.generation, &d.doc, PUSH_TIMEOUT) {
            Ok(()) => {
                self.need_push = false;
                self.pushed = Some(d.generation);
                self.pushed_here = true;
                self.retry_at = None;
                link.update(|s| {
                    s.pushes += 1;
                    s.resyncs += resync as u64;
                    s.pushed_generation = Some(d.generation);
                    s.last_error = None;
                });
            }
            Err(e) => {
                eprintln!("braid-control: pushing generation {}: {e}", d.generation);
                // Resend whole later; the reader drops the open transaction
                // at our next BEGIN.
                self.need_push = true;
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                link.update(|s| s.last_error = Some(format!("pushing generation {}: {e}", d.generation)));
            }
        }
    }
}
