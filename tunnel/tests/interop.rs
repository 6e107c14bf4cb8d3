//! Plain ESP interoperates with an independent implementation:
//! `tests/esp_peer.py`, written from RFC 4303 / RFC 4106 over Python
//! `cryptography`'s AESGCM. It (a) decrypts and checks what braid seals, and
//! (b) seals packets braid must open. AES-128 and AES-256, inner IPv4 and
//! IPv6, several sizes, sequence numbers across 2^32 (ESN).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::plain::{decapsulate, encapsulate};
use braid_tunnel::sa::{InboundSa, OutboundSa, SaParams, Spi};
use braid_tunnel::wire::esp::{MAX_TAIL, PAYLOAD_OFFSET};
use braid_tunnel::DropReason;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/esp_peer.py");
const INNER_SIZES: [usize; 8] = [0, 1, 2, 3, 24, 100, 1400, 9000];
/// Sequence numbers start here: 1, and just below 2^32 so the run crosses it.
const STARTS: [u64; 2] = [1, (1 << 32) - 5];
const PER_RUN: usize = 10;

/// xorshift64*: deterministic bytes without `rand`.
struct Prng(u64);
impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Python with `cryptography`, installed with pip if missing. Fails, never
/// skips, when it cannot be had.
fn python_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let have = || {
            Command::new("python3")
                .args(["-c", "import cryptography"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have() {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "cryptography"])
                .status()
                .expect("python3 must be installed for the ESP interop test");
            assert!(status.success(), "pip install cryptography failed");
            assert!(
                have(),
                "python `cryptography` still missing after pip install"
            );
        }
    });
}

fn peer(mode: &str, input: &str) -> Vec<String> {
    python_ready();
    let mut child = Command::new("python3")
        .args([SCRIPT, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "esp_peer.py {mode} failed:\n{stdout}");
    stdout.lines().map(str::to_owned).collect()
}

fn params(spi: u32, key_len: usize, rng: &mut Prng) -> SaParams {
    SaParams {
        spi: Spi(spi),
        key: AesGcmKey::from_slice(&rng.bytes(key_len)).unwrap(),
        salt: rng.bytes(4).try_into().unwrap(),
        packet_limit: u64::MAX,
    }
}

/// An inner packet: IPv4 or IPv6 header with lengths set, then random bytes.
fn inner(v6: bool, body: usize, rng: &mut Prng) -> Vec<u8> {
    let hlen = if v6 { 40 } else { 20 };
    let mut p = rng.bytes(hlen + body);
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(body as u16).to_be_bytes());
        p[6] = 17;
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((hlen + body) as u16).to_be_bytes());
        p[9] = 17;
    }
    p
}

struct Case {
    params: SaParams,
    start: u64,
    inners: Vec<Vec<u8>>,
}

fn cases(rng: &mut Prng) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut spi = 0x1000;
    for key_len in [16, 32] {
        for v6 in [false, true] {
            for start in STARTS {
                spi += 1;
                let inners = (0..PER_RUN)
                    .map(|i| inner(v6, INNER_SIZES[i % INNER_SIZES.len()], rng))
                    .collect();
                cases.push(Case {
                    params: params(spi, key_len, rng),
                    start,
                    inners,
                });
            }
        }
    }
    cases
}

fn key_salt(p: &SaParams) -> String {
    format!("{} {} {}", hex(p.key.as_bytes()), hex(&p.salt), p.spi.0)
}

#[test]
fn peer_decrypts_what_braid_seals() {
    let mut rng = Prng(0x5eed);
    let mut input = String::new();
    let mut count = 0;
    let mut crossed = false;
    for case in cases(&mut rng) {
        let tx = OutboundSa::starting_at(&case.params, case.start);
        let mut block = tx.reserve(case.inners.len()).unwrap();
        for (i, inner) in case.inners.iter().enumerate() {
            let seq = case.start + i as u64;
            crossed |= seq > 1 << 32;
            let mut buf = vec![0u8; PAYLOAD_OFFSET + inner.len() + MAX_TAIL];
            buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner.len()].copy_from_slice(inner);
            let len = encapsulate(&tx, &mut block, &mut buf, inner.len()).unwrap();
            input += &format!(
                "{} {seq} {} {}\n",
                key_salt(&case.params),
                hex(&buf[..len]),
                hex(inner)
            );
            count += 1;
        }
    }
    assert!(crossed);
    let out = peer("verify", &input);
    assert_eq!(out.len(), count, "{out:?}");
    assert!(out.iter().all(|l| l == "ok"), "{out:?}");
}

#[test]
fn braid_opens_what_peer_seals() {
    let mut rng = Prng(0xfeed);
    let cases = cases(&mut rng);
    let mut input = String::new();
    for case in &cases {
        for (i, inner) in case.inners.iter().enumerate() {
            let seq = case.start + i as u64;
            // The peer picks its own IVs (RFC 4106 3.1 only asks for
            // uniqueness); braid reads the IV from the wire. Some packets
            // carry more padding than alignment needs (RFC 4303 2.4).
            let iv = rng.bytes(8);
            let extra_pad = [0, 4, 8, 252][i % 4];
            input += &format!(
                "{} {seq} {} {extra_pad} {}\n",
                key_salt(&case.params),
                hex(&iv),
                hex(inner)
            );
        }
    }
    let out = peer("seal", &input);
    let mut lines = out.iter();
    let mut opened = 0;
    for case in &cases {
        let mut rx = InboundSa::starting_at(&case.params, 4096, case.start - 1).unwrap();
        let mut packets: Vec<(u64, Vec<u8>, &Vec<u8>)> = case
            .inners
            .iter()
            .enumerate()
            .map(|(i, inner)| (case.start + i as u64, unhex(lines.next().unwrap()), inner))
            .collect();
        // Deliver out of order, as several paths would.
        packets.swap(0, 3);
        packets.swap(5, 9);
        for (seq, esp, inner) in &packets {
            // A flipped bit anywhere is refused and does not move the window.
            let mut forged = esp.clone();
            forged[esp.len() / 2] ^= 0x01;
            assert!(decapsulate(&mut rx, &mut forged, 0).is_err());
            let mut buf = esp.clone();
            let got = decapsulate(&mut rx, &mut buf, 0).unwrap();
            assert_eq!(got.seq, *seq);
            assert_eq!(got.spi, case.params.spi);
            assert_eq!(got.next_header, if inner[0] >> 4 == 6 { 41 } else { 4 });
            assert_eq!(&buf[got.payload], &inner[..]);
            let mut again = esp.clone();
            assert_eq!(
                decapsulate(&mut rx, &mut again, 0),
                Err(DropReason::Replayed)
            );
            opened += 1;
        }
    }
    assert!(lines.next().is_none());
    assert_eq!(opened, cases.len() * PER_RUN);
}
