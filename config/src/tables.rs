//! The dataplane's configuration: ports, peers, bundles of tunnels and
//! routes.
//!
//! Two stages, one model: [`Config`] is the JSON document as written (names,
//! strings, defaults filled in; a static file today, the control plane's
//! pushed tables later), and [`Tables`] is what [`Tables::from_config`]
//! validates it into: names resolved to indices, MACs to bytes, addresses to
//! `core::net` types, keys to [`SaParams`], routes compiled into a
//! [`RouteTable`]. Workers read only `Tables`, which is immutable and
//! swapped whole; nothing on the per-packet path looks a name up.
//!
//! Every validation error names the offending field by its path in the
//! document (`bundles[0].tunnels[2].key_in`) and says why. The schema and
//! every rule are in `docs/config.md`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use braid_tunnel::balancer::{PathParams, Policy};
use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::liveness::LivenessConfig;
use braid_tunnel::reorder::HoldConfig;
use braid_tunnel::replay::{MAX_WINDOW, MIN_WINDOW};
use braid_tunnel::sa::{SaParams, Spi, MAX_PACKET_LIMIT, SALT_LEN};
use braid_tunnel::wire::esp;
use serde::{Deserialize, Serialize};

use crate::route::{self, Prefix, RouteError, RouteTable};

/// Smallest port MTU: the IPv4 minimum datagram every host must accept
/// (RFC 791).
pub const MIN_MTU: u32 = 576;
/// Largest port MTU: a common jumbo-frame ceiling of 825xx/X710 NICs.
pub const MAX_MTU: u32 = 9600;
/// Default port MTU (Ethernet).
pub const DEFAULT_MTU: u32 = 1500;
/// Outer IPv4 header without options (RFC 791).
pub const OUTER_IPV4_LEN: usize = 20;
/// UDP header of the ESP-in-UDP encapsulation (RFC 3948).
pub const UDP_LEN: usize = 8;
/// Bytes an ESP-in-UDP-in-IPv4 packet adds around a bundle frame at most:
/// IPv4 20 + UDP 8 + ESP header and IV 16 + pad 3 + trailer 2 + ICV 16 = 65.
pub const FRAME_OVERHEAD_V4: usize = OUTER_IPV4_LEN + UDP_LEN + esp::PAYLOAD_OFFSET + esp::MAX_TAIL;
/// Outer IPv6 header, without extension headers (RFC 8200).
pub const OUTER_IPV6_LEN: usize = 40;
/// [`FRAME_OVERHEAD_V4`] over IPv6: 85.
pub const FRAME_OVERHEAD_V6: usize = OUTER_IPV6_LEN + UDP_LEN + esp::PAYLOAD_OFFSET + esp::MAX_TAIL;
/// Smallest MTU of a WAN port carrying IPv6 tunnels (RFC 8200 section 5).
pub const MIN_MTU_V6: u32 = 1280;

/// Bytes the outer headers of a tunnel from `local` add around a bundle
/// frame at most.
pub fn frame_overhead(local: &SocketAddr) -> usize {
    if local.is_ipv6() {
        FRAME_OVERHEAD_V6
    } else {
        FRAME_OVERHEAD_V4
    }
}
/// Longest name (`name` of ports, peers, bundles, NAT rules), in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Smallest `max_frame`: below this, packing and fragment headers eat the
/// frame.
pub const MIN_MAX_FRAME: usize = 256;
/// Longest `reorder_hold_max_ms`.
pub const MAX_HOLD_MS: u64 = 10_000;
/// Longest `probe_interval_ms`.
pub const MAX_PROBE_INTERVAL_MS: u64 = 60_000;
/// Default `keepalive_secs`: 20 s, the usual NAT-T default (many NATs
/// forget an idle UDP mapping after 30 s, though RFC 4787 REQ-5 asks for at
/// least 2 minutes).
pub const DEFAULT_KEEPALIVE_SECS: u32 = 20;
/// Longest `keepalive_secs`.
pub const MAX_KEEPALIVE_SECS: u32 = 3600;
/// Lowest SPI not reserved by IANA (RFC 4303 section 2.1: 1..=255 reserved,
/// 0 never sent).
pub const MIN_SPI: u32 = 256;

const NANOS_PER_MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// The document as written.

/// The configuration document. Unknown fields anywhere are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub bundles: Vec<BundleConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Options shared by every tunnel.
    #[serde(default)]
    pub tunnel: TunnelOptionsConfig,
    /// Address translation of inner packets at the tunnel endpoint.
    #[serde(default, skip_serializing_if = "NatConfig::is_empty")]
    pub nat: NatConfig,
}

/// Which side of the gateway a port faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// Inner traffic: packets to route into bundles, and to deliver.
    Lan,
    /// Outer traffic: ESP-in-UDP to and from the peers.
    Wan,
}

/// One DPDK port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    /// DPDK device name, e.g. `net_memif0`, `0000:03:00.0`, or a ring PMD name.
    pub device: String,
    pub role: PortRole,
    /// This port's MAC, `02:00:00:00:00:01`.
    pub mac: String,
    /// Interface address with prefix length, `192.0.2.1/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// Interface address with prefix length, `2001:db8::1/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Static neighbour: the LAN host or router on a LAN port (required),
    /// the next hop toward the peers on a WAN port (or `next_hop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<String>,
    /// WAN ports only, instead of `next_hop_mac`: the next hop's address in
    /// the port's `ipv4` or `ipv6` subnet, resolved by ARP / neighbor
    /// discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Name of a kernel tap interface for this port's exception path:
    /// frames for the gateway itself that the dataplane does not answer
    /// (SSH, BGP, DHCP, IKE, ...) go to it, and what the kernel sends on it
    /// leaves by this port. None: such frames are dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_tap: Option<String>,
}

/// A peer gateway, reached through one bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    /// Name of the bundle that carries this peer's traffic.
    pub bundle: String,
}

/// What an ESP packet of the bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleMode {
    /// braid's bundle frames (next header 253): packing, fragmentation and
    /// the bundle sequence for re-ordering across tunnels.
    #[default]
    Bundle,
    /// One inner packet per ESP packet (next header 4 or 41): interoperates
    /// with any ESP peer.
    Plain,
}

/// How a bundle spreads frames over its tunnels (the names of
/// [`braid_tunnel::balancer::Policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    RoundRobin,
    #[default]
    Weighted,
    EarliestArrival,
}

impl From<BalancePolicy> for Policy {
    fn from(p: BalancePolicy) -> Policy {
        match p {
            BalancePolicy::RoundRobin => Policy::RoundRobin,
            BalancePolicy::Weighted => Policy::Weighted,
            BalancePolicy::EarliestArrival => Policy::EarliestArrival,
        }
    }
}

/// A set of tunnels to one peer gateway that together make one wide tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    pub name: String,
    #[serde(default)]
    pub mode: BundleMode,
    #[serde(default)]
    pub policy: BalancePolicy,
    /// Largest frame (ESP payload). Default: the smallest MTU of the
    /// tunnels' WAN ports less their outer headers ([`FRAME_OVERHEAD_V4`],
    /// [`FRAME_OVERHEAD_V6`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame: Option<u32>,
    /// A tunnel that sent nothing for this many seconds sends an RFC 3948
    /// NAT-keepalive; 0 turns them off. Default [`DEFAULT_KEEPALIVE_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_secs: Option<u32>,
    /// Plain mode: an ESP packet bigger than its WAN port's MTU leaves as
    /// outer IPv4 or IPv6 fragments (RFC 4459 section 4.1, fragmenting
    /// after encryption) instead of being cut before sealing (TCP into
    /// segments, IPv4 without DF into inner fragments) or dropped as
    /// `too_big` (IPv6, IPv4 with DF). Default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_fragmentation: Option<bool>,
    pub tunnels: Vec<TunnelConfig>,
}

/// One ESP-in-UDP tunnel: an SA each way and its UDP port pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Name of the WAN port the tunnel leaves by.
    pub wan_port: String,
    /// Local socket address, `192.0.2.1:4500`; the IP is the WAN port's.
    pub local: String,
    /// The peer's socket address, `198.51.100.1:4500`.
    pub remote: String,
    /// SPI of the outbound SA (chosen by the peer).
    pub spi_out: u32,
    /// SPI of the inbound SA (chosen here; unique across all tunnels).
    pub spi_in: u32,
    /// AES-GCM key, 16 or 32 bytes in hex.
    pub key_out: HexSecret,
    pub key_in: HexSecret,
    /// RFC 4106 salt, 4 bytes in hex.
    pub salt_out: HexSecret,
    pub salt_in: HexSecret,
    /// Share of the bundle's traffic under the `weighted` policy.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Path rate in Mbit/s for `earliest_arrival`; 0 is unmetered.
    #[serde(default)]
    pub rate_mbps: u64,
}

/// Inner destination prefix to peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `10.2.0.0/16` or `fd00:2::/64`; host bits must be clear.
    pub prefix: String,
    pub peer: String,
}

/// Options shared by every tunnel, each with a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelOptionsConfig {
    /// Anti-replay window in packets: a power of two in 64..=2^20.
    pub replay_window: u64,
    /// Shortest re-order hold.
    pub reorder_hold_min_ms: u64,
    /// Longest re-order hold: the most a lost packet delays its flow.
    pub reorder_hold_max_ms: u64,
    /// Added to the measured path skew.
    pub reorder_hold_margin_ms: u64,
    /// Time between liveness probes on each tunnel.
    pub probe_interval_ms: u64,
    /// Missed probes in a row that take a tunnel out of the rotation.
    pub probe_dead_after: u32,
    /// Replies in a row that bring it back.
    pub probe_alive_after: u32,
}

impl Default for TunnelOptionsConfig {
    /// The tunnel crate's defaults ([`HoldConfig`], [`LivenessConfig`],
    /// [`braid_tunnel::replay::DEFAULT_WINDOW`]).
    fn default() -> Self {
        let hold = HoldConfig::default();
        let live = LivenessConfig::default();
        TunnelOptionsConfig {
            replay_window: braid_tunnel::replay::DEFAULT_WINDOW,
            reorder_hold_min_ms: hold.floor / NANOS_PER_MS,
            reorder_hold_max_ms: hold.ceiling / NANOS_PER_MS,
            reorder_hold_margin_ms: hold.margin / NANOS_PER_MS,
            probe_interval_ms: live.interval / NANOS_PER_MS,
            probe_dead_after: live.dead_after,
            probe_alive_after: live.alive_after,
        }
    }
}

fn default_mtu() -> u32 {
    DEFAULT_MTU
}

fn default_weight() -> u32 {
    1
}

/// Key material as hex. Serialized as the plain string; `Debug` never shows
/// it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HexSecret(pub String);

impl fmt::Debug for HexSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HexSecret(..)")
    }
}

impl From<&str> for HexSecret {
    fn from(s: &str) -> Self {
        HexSecret(s.to_string())
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not JSON, a wrong type, a missing or an unknown field.
    #[error("parsing configuration: {0}")]
    Parse(#[from] serde_json::Error),
    /// Well-formed, but breaks a rule. `field` is the path in the document.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConfigError {
    /// The path of the offending field, e.g. `bundles[0].tunnels[2].key_in`,
    /// for [`ConfigError::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

impl Config {
    /// Parses a document; unknown fields are an error. Does not validate:
    /// see [`Tables::from_config`].
    pub fn from_json_str(s: &str) -> Result<Config, ConfigError> {
        Ok(serde_json::from_str(s)?)
    }

    /// Reads and parses a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json_str(&text)
    }

    /// The document as pretty JSON, defaults written out and keys included.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Config always serializes")
    }
}

// ---------------------------------------------------------------------------
// The validated tables.

/// An interface address: the host's address and its subnet's prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfaceAddr<A> {
    pub addr: A,
    pub prefix_len: u8,
}

/// Where a port sends its frames: a fixed MAC, or addresses the dataplane
/// resolves (ARP / IPv6 neighbor discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Every frame to this MAC.
    Mac([u8; 6]),
    /// A WAN port: every frame to this address's MAC. A LAN port: frames
    /// for a destination in one of the port's subnets to that
    /// destination's MAC, the others to this router's.
    Ip(IpAddr),
    /// A LAN port without a router: frames for a destination in one of the
    /// port's subnets to that destination's MAC; the others are dropped.
    OnLink,
}

/// A port, at its index in [`Tables::ports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub device: String,
    pub role: PortRole,
    pub mac: [u8; 6],
    pub next_hop: NextHop,
    pub ipv4: Option<IfaceAddr<Ipv4Addr>>,
    pub ipv6: Option<IfaceAddr<Ipv6Addr>>,
    pub mtu: u16,
    /// Kernel tap interface of the exception path, if any.
    pub kernel_tap: Option<String>,
}

/// A peer, at the index its routes resolve to in [`Tables::peers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Index in [`Tables::bundles`].
    pub bundle: usize,
}

/// A bundle, at its index in [`Tables::bundles`].
#[derive(Debug, Clone)]
pub struct Bundle {
    pub name: String,
    pub mode: BundleMode,
    pub policy: Policy,
    /// Largest frame (ESP payload) in bytes.
    pub max_frame: usize,
    /// Seconds without sending after which a tunnel sends a NAT-keepalive
    /// (RFC 3948 section 2.3); 0: never.
    pub keepalive_secs: u32,
    /// Plain mode only: ESP packets bigger than a WAN port's MTU leave as
    /// outer IPv4 or IPv6 fragments.
    pub outer_fragmentation: bool,
    /// Index in [`Tables::peers`] of the peer using this bundle, if any.
    pub peer: Option<usize>,
    /// Tunnel `i` is the balancer's and the re-orderer's path `i`.
    pub tunnels: Vec<Tunnel>,
}

/// One tunnel of a bundle.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// Index in [`Tables::ports`]; always a WAN port.
    pub wan_port: usize,
    /// Outer addresses, IPv4 or IPv6 (both ends the same family).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub sa_out: SaParams,
    pub sa_in: SaParams,
    /// Share under [`Policy::Weighted`], at least 1.
    pub weight: u32,
    /// Path rate in bytes/s for [`Policy::EarliestArrival`]; 0 is unmetered.
    pub rate: u64,
}

impl Tunnel {
    /// The balancer's figures for this path before any measurement.
    pub fn path_params(&self) -> PathParams {
        PathParams {
            weight: self.weight,
            rate: self.rate,
            delay: 0,
        }
    }
}

/// A tunnel by position: `tables.bundles[bundle].tunnels[tunnel]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelRef {
    pub bundle: u32,
    pub tunnel: u32,
}

/// The shared tunnel options in the tunnel crate's units (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelOptions {
    pub replay_window: u64,
    pub hold: HoldConfig,
    pub liveness: LivenessConfig,
}

/// The validated, immutable snapshot the workers read.
#[derive(Debug, Clone)]
pub struct Tables {
    pub ports: Vec<Port>,
    pub peers: Vec<Peer>,
    pub bundles: Vec<Bundle>,
    /// Inner destination to index in `peers`.
    pub routes: RouteTable,
    pub options: TunnelOptions,
    /// SNAT and DNAT rules, validated (see [`Nat`]).
    pub nat: Nat,
    /// Inbound SPI to tunnel, sorted by SPI.
    by_spi_in: Box<[(Spi, TunnelRef)]>,
    /// (WAN port, local socket) to tunnel, sorted.
    by_local: Box<[((usize, SocketAddr), TunnelRef)]>,
}

impl Tables {
    /// Validates a configuration into tables. The first broken rule is
    /// reported with its field path.
    pub fn from_config(config: &Config) -> Result<Tables, ConfigError> {
        let ports = resolve_ports(&config.ports)?;
        let port_index = index_names(config.ports.iter().map(|p| p.name.as_str()));
        let bundle_index = unique_names("bundles", config.bundles.iter().map(|b| b.name.as_str()))?;
        let peer_index = unique_names("peers", config.peers.iter().map(|p| p.name.as_str()))?;

        let mut peers = Vec::with_capacity(config.peers.len());
        let mut bundle_peer: Vec<Option<usize>> = vec![None; config.bundles.len()];
        for (i, p) in config.peers.iter().enumerate() {
            let field = format!("peers[{i}].bundle");
            let &bundle = bundle_index
                .get(p.bundle.as_str())
                .ok_or_else(|| invalid(&field, format!("no bundle named {:?}", p.bundle)))?;
            if let Some(other) = bundle_peer[bundle] {
                return Err(invalid(
                    field,
                    format!("bundle {:?} is already used by peers[{other}]", p.bundle),
                ));
            }
            bundle_peer[bundle] = Some(i);
            peers.push(Peer {
                name: p.name.clone(),
                bundle,
            });
        }

        let options = resolve_options(&config.tunnel)?;

        let mut bundles = Vec::with_capacity(config.bundles.len());
        let mut spi_in_owner: HashMap<u32, String> = HashMap::new();
        // (key, salt) -> where it is used: every tunnel and direction
        // counts its sequence numbers (the GCM nonces' low half) from 1.
        let mut nonce_space: HashMap<(Vec<u8>, Vec<u8>), String> = HashMap::new();
        let mut local_owner: HashMap<(usize, SocketAddr), String> = HashMap::new();
        let mut by_spi_in = Vec::new();
        let mut by_local = Vec::new();
        for (b, bc) in config.bundles.iter().enumerate() {
            let at = format!("bundles[{b}]");
            if bc.tunnels.is_empty() {
                return Err(invalid(
                    format!("{at}.tunnels"),
                    "a bundle needs at least one tunnel",
                ));
            }
            let mut spi_out_owner: HashMap<u32, String> = HashMap::new();
            let mut tunnels = Vec::with_capacity(bc.tunnels.len());
            for (t, tc) in bc.tunnels.iter().enumerate() {
                let at = format!("{at}.tunnels[{t}]");
                let tunnel = resolve_tunnel(&at, tc, &ports, &port_index)?;
                if let Some(other) = spi_in_owner.insert(tc.spi_in, at.clone()) {
                    return Err(invalid(
                        format!("{at}.spi_in"),
                        format!("SPI {} is already the spi_in of {other}", tc.spi_in),
                    ));
                }
                if let Some(other) = spi_out_owner.insert(tc.spi_out, at.clone()) {
                    return Err(invalid(
                        format!("{at}.spi_out"),
                        format!(
                            "SPI {} is already the spi_out of {other} in this bundle",
                            tc.spi_out
                        ),
                    ));
                }
                let key = (tunnel.wan_port, tunnel.local);
                if let Some(other) = local_owner.insert(key, at.clone()) {
                    return Err(invalid(
                        format!("{at}.local"),
                        format!(
                            "{} on port {:?} is already the local address of {other}",
                            tunnel.local, tc.wan_port
                        ),
                    ));
                }
                for (dir, key, salt) in [("out", &tc.key_out, &tc.salt_out), ("in", &tc.key_in, &tc.salt_in)] {
                    // Already parsed by `resolve_tunnel`: the bytes, as
                    // written in any case or with `0x`.
                    let bytes = |s: &HexSecret| parse_hex(&s.0).unwrap_or_default();
                    let here = format!("{at}.key_{dir} and salt_{dir}");
                    if let Some(other) = nonce_space.insert((bytes(key), bytes(salt)), here.clone()) {
                        return Err(invalid(
                            format!("{at}.salt_{dir}"),
                            format!(
                                "{here} are the same as {other}: AES-GCM would use each nonce twice with one key \
                                 (every tunnel and direction numbers its packets from 1), which gives the key away; \
                                 give every tunnel and direction its own key or salt"
                            ),
                        ));
                    }
                }
                let r = TunnelRef {
                    bundle: b as u32,
                    tunnel: t as u32,
                };
                by_spi_in.push((tunnel.sa_in.spi, r));
                by_local.push((key, r));
                tunnels.push(tunnel);
            }
            // The tunnel whose WAN MTU less its outer headers is smallest.
            let (min_mtu, overhead) = tunnels
                .iter()
                .map(|t| (ports[t.wan_port].mtu as usize, frame_overhead(&t.local)))
                .min_by_key(|(mtu, o)| mtu - o)
                .expect("at least one tunnel");
            let limit = min_mtu - overhead;
            let max_frame = match bc.max_frame {
                None => limit,
                Some(f) => {
                    let f = f as usize;
                    if f < MIN_MAX_FRAME {
                        return Err(invalid(
                            format!("{at}.max_frame"),
                            format!("{f} is below the minimum of {MIN_MAX_FRAME}"),
                        ));
                    }
                    if f > limit {
                        return Err(invalid(
                            format!("{at}.max_frame"),
                            format!(
                                "{f} does not fit the smallest WAN MTU of the bundle's tunnels \
                                 ({min_mtu} - {overhead} bytes of outer headers = {limit})"
                            ),
                        ));
                    }
                    f
                }
            };
            let keepalive_secs = bc.keepalive_secs.unwrap_or(DEFAULT_KEEPALIVE_SECS);
            if keepalive_secs > MAX_KEEPALIVE_SECS {
                return Err(invalid(
                    format!("{at}.keepalive_secs"),
                    format!("{keepalive_secs} is above the maximum of {MAX_KEEPALIVE_SECS} (0 turns keepalives off)"),
                ));
            }
            let outer_fragmentation = bc.outer_fragmentation.unwrap_or(false);
            if outer_fragmentation && bc.mode != BundleMode::Plain {
                return Err(invalid(
                    format!("{at}.outer_fragmentation"),
                    "applies to plain mode only (bundle mode cuts its frames to the WAN MTU itself)",
                ));
            }
            bundles.push(Bundle {
                name: bc.name.clone(),
                mode: bc.mode,
                policy: bc.policy.into(),
                max_frame,
                keepalive_secs,
                outer_fragmentation,
                peer: bundle_peer[b],
                tunnels,
            });
        }

        let mut prefixes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let prefix: Prefix = r
                .prefix
                .parse()
                .map_err(|e| invalid(format!("routes[{i}].prefix"), e))?;
            let &peer = peer_index.get(r.peer.as_str()).ok_or_else(|| {
                invalid(
                    format!("routes[{i}].peer"),
                    format!("no peer named {:?}", r.peer),
                )
            })?;
            prefixes.push((prefix, peer as u32));
        }
        let routes = RouteTable::new(prefixes).map_err(|e| match e {
            RouteError::Duplicate {
                prefix,
                first,
                index,
            } => invalid(
                format!("routes[{index}].prefix"),
                format!("{prefix} is already routed by routes[{first}]"),
            ),
            RouteError::ReservedValue { index, .. } => {
                invalid(format!("routes[{index}].peer"), "too many peers")
            }
        })?;

        let nat = resolve_nat(&config.nat, &peer_index)?;

        by_spi_in.sort_unstable_by_key(|&(spi, _)| spi);
        by_local.sort_unstable_by_key(|&(k, _)| k);
        Ok(Tables {
            ports,
            peers,
            bundles,
            routes,
            options,
            nat,
            by_spi_in: by_spi_in.into_boxed_slice(),
            by_local: by_local.into_boxed_slice(),
        })
    }

    /// The tunnel whose inbound SA has this SPI.
    #[inline]
    pub fn tunnel_by_spi_in(&self, spi: Spi) -> Option<TunnelRef> {
        self.by_spi_in
            .binary_search_by_key(&spi, |&(s, _)| s)
            .ok()
            .map(|i| self.by_spi_in[i].1)
    }

    /// The tunnel with this local socket address on WAN port `port`: how
    /// the receiver classifies an ESP-in-UDP packet by its destination.
    #[inline]
    pub fn tunnel_by_local(&self, port: usize, local: SocketAddr) -> Option<TunnelRef> {
        self.by_local
            .binary_search_by_key(&(port, local), |(k, _)| *k)
            .ok()
            .map(|i| self.by_local[i].1)
    }

    /// The tunnel a [`TunnelRef`] names.
    #[inline]
    pub fn tunnel(&self, r: TunnelRef) -> &Tunnel {
        &self.bundles[r.bundle as usize].tunnels[r.tunnel as usize]
    }

    /// Indices and ports of one role.
    pub fn ports_with_role(&self, role: PortRole) -> impl Iterator<Item = (usize, &Port)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.role == role)
    }
}

fn index_names<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    names.enumerate().map(|(i, n)| (n, i)).collect()
}

/// Name to index, refusing empty and repeated names.
fn unique_names<'a>(
    list: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<HashMap<&'a str, usize>, ConfigError> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        let field = format!("{list}[{i}].name");
        if name.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        // Bundle and port names become part of the stats segment's
        // counter names (`tunnel/<bundle>/<t>/remote_changes`, at most 64
        // bytes), which Prometheus labels split at '/'.
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(
                field,
                format!("{name:?} is {} bytes; names are at most {MAX_NAME_LEN}", name.len()),
            ));
        }
        if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
            return Err(invalid(
                field,
                format!("{name:?} contains {c:?}; names may not contain '/' or control characters"),
            ));
        }
        if let Some(first) = index.insert(name, i) {
            return Err(invalid(
                field,
                format!("duplicate name {name:?} (also {list}[{first}])"),
            ));
        }
    }
    Ok(index)
}

/// Most ports in a document, with one more for each `kernel_tap` (a DPDK
/// `net_tap` port of its own): DPDK's own limit (`RTE_MAX_ETHPORTS`), and
/// a bound on the per-port checks (found by review: 500,000 ports kept
/// the control's validation busy for minutes, every other change waiting).
pub const MAX_PORTS: usize = 32;

fn resolve_ports(config: &[PortConfig]) -> Result<Vec<Port>, ConfigError> {
    let taps = config.iter().filter(|p| p.kernel_tap.is_some()).count();
    if config.len() + taps > MAX_PORTS {
        return Err(invalid(
            "ports",
            format!("{} ports and {taps} kernel taps, at most {MAX_PORTS} in all (DPDK's port limit)", config.len()),
        ));
    }
    unique_names("ports", config.iter().map(|p| p.name.as_str()))?;
    let mut devices: HashMap<&str, usize> = HashMap::new();
    let mut ports = Vec::with_capacity(config.len());
    for (i, p) in config.iter().enumerate() {
        let at = format!("ports[{i}]");
        if p.device.is_empty() {
            return Err(invalid(format!("{at}.device"), "must not be empty"));
        }
        if let Some(first) = devices.insert(p.device.as_str(), i) {
            return Err(invalid(
                format!("{at}.device"),
                format!("device {:?} is already ports[{first}]", p.device),
            ));
        }
        let mac = parse_unicast_mac(&p.mac).map_err(|e| invalid(format!("{at}.mac"), e))?;
        let ipv4 = match &p.ipv4 {
            None => None,
            Some(s) => Some(parse_iface_v4(s).map_err(|e| invalid(format!("{at}.ipv4"), e))?),
        };
        let ipv6 = match &p.ipv6 {
            None => None,
            Some(s) => Some(parse_iface_v6(s).map_err(|e| invalid(format!("{at}.ipv6"), e))?),
        };
        let next_hop = match (&p.next_hop_mac, &p.next_hop, p.role) {
            (Some(m), None, _) => NextHop::Mac(
                parse_unicast_mac(m).map_err(|e| invalid(format!("{at}.next_hop_mac"), e))?,
            ),
            (None, Some(ip), _) => NextHop::Ip(
                parse_next_hop(ip, ipv4, ipv6, mac).map_err(|e| invalid(format!("{at}.next_hop"), e))?,
            ),
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    format!("{at}.next_hop"),
                    "give next_hop or next_hop_mac, not both",
                ))
            }
            (None, None, PortRole::Lan) if ipv4.is_some() || ipv6.is_some() => NextHop::OnLink,
            (None, None, PortRole::Lan) => {
                return Err(invalid(
                    format!("{at}.next_hop_mac"),
                    "a LAN port needs next_hop_mac, or an ipv4/ipv6 address to resolve its hosts from",
                ))
            }
            (None, None, PortRole::Wan) => {
                return Err(invalid(
                    format!("{at}.next_hop_mac"),
                    "a WAN port needs next_hop_mac or next_hop",
                ))
            }
        };
        if !(MIN_MTU..=MAX_MTU).contains(&p.mtu) {
            return Err(invalid(
                format!("{at}.mtu"),
                format!("{} is outside {MIN_MTU}..={MAX_MTU}", p.mtu),
            ));
        }
        // Every IPv6 link carries 1280 bytes (RFC 8200 section 5); a
        // sender never goes below it whatever Packet Too Big says.
        if ipv6.is_some() && p.mtu < MIN_MTU_V6 {
            return Err(invalid(
                format!("{at}.mtu"),
                format!("a port with an ipv6 address needs an MTU of at least {MIN_MTU_V6}, not {}", p.mtu),
            ));
        }
        ports.push(Port {
            name: p.name.clone(),
            device: p.device.clone(),
            role: p.role,
            mac,
            next_hop,
            ipv4,
            ipv6,
            mtu: p.mtu as u16,
            kernel_tap: match &p.kernel_tap {
                None => None,
                Some(name) => {
                    check_ifname(name).map_err(|e| invalid(format!("{at}.kernel_tap"), e))?;
                    if let Some(j) = config[..i].iter().position(|q| q.kernel_tap.as_deref() == Some(name)) {
                        return Err(invalid(format!("{at}.kernel_tap"), format!("{name:?} is already ports[{j}]'s")));
                    }
                    Some(name.clone())
                }
            },
        });
    }
    for (role, what) in [(PortRole::Lan, "LAN"), (PortRole::Wan, "WAN")] {
        if !ports.iter().any(|p| p.role == role) {
            return Err(invalid(
                "ports",
                format!("at least one {what} port is needed"),
            ));
        }
    }
    // The dataplane serves one LAN port (found by review: a document with
    // two passed here and the dataplane, started from the control's
    // first push, exited on it again and again).
    let lans = ports.iter().filter(|p| p.role == PortRole::Lan).count();
    if lans > 1 {
        return Err(invalid("ports", format!("{lans} LAN ports: one LAN port per gateway is supported")));
    }
    Ok(ports)
}

/// A Linux interface name: 1 to 15 bytes (IFNAMSIZ - 1) of letters,
/// digits, `-`, `_` and `.`, not `.` or `..`.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?}: an interface name has 1 to 15 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || name == "." || name == ".." {
        return Err(format!("{name:?}: use letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

fn resolve_options(o: &TunnelOptionsConfig) -> Result<TunnelOptions, ConfigError> {
    let w = o.replay_window;
    if !w.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
        return Err(invalid(
            "tunnel.replay_window",
            format!("{w} is not a power of two in {MIN_WINDOW}..={MAX_WINDOW}"),
        ));
    }
    if o.reorder_hold_max_ms > MAX_HOLD_MS {
        return Err(invalid(
            "tunnel.reorder_hold_max_ms",
            format!("{} is above {MAX_HOLD_MS}", o.reorder_hold_max_ms),
        ));
    }
    if o.reorder_hold_min_ms > o.reorder_hold_max_ms {
        return Err(invalid(
            "tunnel.reorder_hold_min_ms",
            format!(
                "{} is above reorder_hold_max_ms ({})",
                o.reorder_hold_min_ms, o.reorder_hold_max_ms
            ),
        ));
    }
    if o.reorder_hold_margin_ms > MAX_HOLD_MS {
        return Err(invalid(
            "tunnel.reorder_hold_margin_ms",
            format!("{} is above {MAX_HOLD_MS}", o.reorder_hold_margin_ms),
        ));
    }
    if !(1..=MAX_PROBE_INTERVAL_MS).contains(&o.probe_interval_ms) {
        return Err(invalid(
            "tunnel.probe_interval_ms",
            format!(
                "{} is outside 1..={MAX_PROBE_INTERVAL_MS}",
                o.probe_interval_ms
            ),
        ));
    }
    if o.probe_dead_after == 0 {
        return Err(invalid("tunnel.probe_dead_after", "must be at least 1"));
    }
    if o.probe_alive_after == 0 {
        return Err(invalid("tunnel.probe_alive_after", "must be at least 1"));
    }
    Ok(TunnelOptions {
        replay_window: w,
        hold: HoldConfig {
            floor: o.reorder_hold_min_ms * NANOS_PER_MS,
            ceiling: o.reorder_hold_max_ms * NANOS_PER_MS,
            margin: o.reorder_hold_margin_ms * NANOS_PER_MS,
        },
        liveness: LivenessConfig {
            interval: o.probe_interval_ms * NANOS_PER_MS,
            dead_after: o.probe_dead_after,
            alive_after: o.probe_alive_after,
            ..LivenessConfig::default()
        },
    })
}

fn resolve_tunnel(
    at: &str,
    tc: &TunnelConfig,
    ports: &[Port],
    port_index: &HashMap<&str, usize>,
) -> Result<Tunnel, ConfigError> {
    let f = |name: &str| format!("{at}.{name}");
    let &wan_port = port_index
        .get(tc.wan_port.as_str())
        .ok_or_else(|| invalid(f("wan_port"), format!("no port named {:?}", tc.wan_port)))?;
    let port = &ports[wan_port];
    if port.role != PortRole::Wan {
        return Err(invalid(
            f("wan_port"),
            format!("port {:?} has role lan, expected wan", tc.wan_port),
        ));
    }
    let local = parse_socket(&tc.local).map_err(|e| invalid(f("local"), e))?;
    let (family, port_ip) = match local {
        SocketAddr::V4(_) => ("ipv4", port.ipv4.map(|a| IpAddr::V4(a.addr))),
        SocketAddr::V6(_) => ("ipv6", port.ipv6.map(|a| IpAddr::V6(a.addr))),
    };
    let port_ip = port_ip.ok_or_else(|| {
        invalid(
            f("wan_port"),
            format!("port {:?} has no {family} address to send from", tc.wan_port),
        )
    })?;
    if local.ip() != port_ip {
        return Err(invalid(
            f("local"),
            format!(
                "{} is not the {family} address of port {:?} ({port_ip})",
                local.ip(),
                tc.wan_port,
            ),
        ));
    }
    if local.is_ipv6() && u32::from(port.mtu) < MIN_MTU_V6 {
        return Err(invalid(
            f("local"),
            format!("an IPv6 tunnel needs a WAN MTU of at least {MIN_MTU_V6}; port {:?} has {}", tc.wan_port, port.mtu),
        ));
    }
    let remote = parse_socket(&tc.remote).map_err(|e| invalid(f("remote"), e))?;
    if remote.is_ipv6() != local.is_ipv6() {
        return Err(invalid(f("remote"), format!("{remote} and local {local} are not the same IP version")));
    }
    let spi_out = check_spi(tc.spi_out).map_err(|e| invalid(f("spi_out"), e))?;
    let spi_in = check_spi(tc.spi_in).map_err(|e| invalid(f("spi_in"), e))?;
    let key_out = parse_key(&tc.key_out.0).map_err(|e| invalid(f("key_out"), e))?;
    let key_in = parse_key(&tc.key_in.0).map_err(|e| invalid(f("key_in"), e))?;
    let salt_out = parse_salt(&tc.salt_out.0).map_err(|e| invalid(f("salt_out"), e))?;
    let salt_in = parse_salt(&tc.salt_in.0).map_err(|e| invalid(f("salt_in"), e))?;
    if tc.weight == 0 {
        return Err(invalid(f("weight"), "must be at least 1"));
    }
    let rate = tc
        .rate_mbps
        .checked_mul(1_000_000 / 8)
        .ok_or_else(|| invalid(f("rate_mbps"), format!("{} is too large", tc.rate_mbps)))?;
    Ok(Tunnel {
        wan_port,
        local,
        remote,
        sa_out: SaParams {
            spi: spi_out,
            key: key_out,
            salt: salt_out,
            packet_limit: MAX_PACKET_LIMIT,
        },
        sa_in: SaParams {
            spi: spi_in,
            key: key_in,
            salt: salt_in,
            packet_limit: MAX_PACKET_LIMIT,
        },
        weight: tc.weight,
        rate,
    })
}

// ---------------------------------------------------------------------------
// Field parsers. Each returns the reason; the caller adds the field path.

fn check_spi(spi: u32) -> Result<Spi, String> {
    match spi {
        0 => Err("SPI 0 is never sent (RFC 4303 section 2.1)".into()),
        1..MIN_SPI => Err(format!(
            "SPI {spi} is reserved: 1..=255 are kept by IANA (RFC 4303 section 2.1)"
        )),
        _ => Ok(Spi(spi)),
    }
}

/// Hex digits, optionally after `0x` (as `ip xfrm` prints them).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!("{c:?} at offset {i} is not a hex digit"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    Ok(digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16).expect("checked");
            let lo = (pair[1] as char).to_digit(16).expect("checked");
            (hi * 16 + lo) as u8
        })
        .collect())
}

fn parse_key(s: &str) -> Result<AesGcmKey, String> {
    let what = "expected 16 or 32 bytes of hex";
    let bytes = parse_hex(s).map_err(|e| format!("{what}: {e}"))?;
    AesGcmKey::from_slice(&bytes).ok_or_else(|| format!("{what}, got {}", bytes.len()))
}

fn parse_salt(s: &str) -> Result<[u8; SALT_LEN], String> {
    let what = format!("expected {SALT_LEN} bytes of hex");
    let bytes = parse_hex(s).map_err(|e| format!("{what}: {e}"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{what}, got {}", bytes.len()))
}

/// `02:00:00:00:00:01`: six two-digit hex groups separated by colons.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let err = || format!("{s:?} is not a MAC address like 02:00:00:00:00:01");
    let mut mac = [0u8; 6];
    let mut groups = s.split(':');
    for byte in &mut mac {
        let g = groups.next().ok_or_else(err)?;
        if g.len() != 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        *byte = u8::from_str_radix(g, 16).map_err(|_| err())?;
    }
    if groups.next().is_some() {
        return Err(err());
    }
    Ok(mac)
}

fn parse_unicast_mac(s: &str) -> Result<[u8; 6], String> {
    let mac = parse_mac(s)?;
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s} is a multicast or broadcast MAC, expected unicast"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("{s} is the all-zero MAC"));
    }
    Ok(mac)
}

/// The IPv6 link-local address a port with `mac` has (when it has an
/// IPv6 address): fe80:: and the modified EUI-64 of its MAC (RFC 4291
/// appendix A: ff:fe in the middle, the universal/local bit flipped).
/// The dataplane answers for it and solicits link-local neighbours from
/// it; the port's kernel tap is given the same.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[0..2].copy_from_slice(&[0xfe, 0x80]);
    a[8..16].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]);
    a.into()
}

/// A port's next hop (a WAN port's, or a LAN port's router): a unicast
/// address inside the subnet of the port's address of the same family,
/// not the port's own address; or, for a port with an IPv6 address, an
/// IPv6 link-local one (fe80::/10, where routers advertise themselves),
/// on the link whatever the prefix, not the port's own ([`link_local`] of
/// its `mac`).
fn parse_next_hop(
    s: &str,
    v4: Option<IfaceAddr<Ipv4Addr>>,
    v6: Option<IfaceAddr<Ipv6Addr>>,
    mac: [u8; 6],
) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| format!("{s:?} is not an IP address"))?;
    let (own, prefix_len, same_subnet) = match ip {
        IpAddr::V4(a) => {
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                return Err(format!("{a} is not a unicast address"));
            }
            let Some(i) = v4 else {
                return Err(format!("{a}: the port has no ipv4 address to reach it from"));
            };
            let mask = u32::MAX.checked_shl(32 - i.prefix_len as u32).unwrap_or(0);
            (IpAddr::V4(i.addr), i.prefix_len, u32::from(a) & mask == u32::from(i.addr) & mask)
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() || a.is_multicast() {
                return Err(format!("{a} is not a unicast address"));
            }
            let Some(i) = v6 else {
                return Err(format!("{a}: the port has no ipv6 address to reach it from"));
            };
            let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
            let mask = u128::MAX.checked_shl(128 - i.prefix_len as u32).unwrap_or(0);
            (IpAddr::V6(i.addr), i.prefix_len, link_local || u128::from(a) & mask == u128::from(i.addr) & mask)
        }
    };
    if ip == own || ip == IpAddr::V6(link_local(mac)) {
        return Err(format!("{ip} is the port's own address"));
    }
    if !same_subnet {
        return Err(format!("{ip} is outside the port's subnet {own}/{prefix_len}"));
    }
    Ok(ip)
}

fn parse_iface_v4(s: &str) -> Result<IfaceAddr<Ipv4Addr>, String> {
    let (addr, prefix_len) = route::parse_cidr(s).map_err(|e| e.to_string())?;
    let IpAddr::V4(addr) = addr else {
        return Err(format!("{addr} is not an IPv4 address"));
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!("{addr} is not a unicast address"));
    }
    // What a router never sends from (RFC 1812 section 5.3.7): its ICMP
    // errors would be dropped as martians. (240.0.0.0/4 is allowed: some
    // networks use it inside.)
    let o = addr.octets();
    if o[0] == 0 || o[0] == 127 {
        return Err(format!("{addr} is not an address a router sends from (this network or loopback)"));
    }
    Ok(IfaceAddr { addr, prefix_len })
}

fn parse_iface_v6(s: &str) -> Result<IfaceAddr<Ipv6Addr>, String> {
    let (addr, prefix_len) = route::parse_cidr(s).map_err(|e| e.to_string())?;
    let IpAddr::V6(addr) = addr else {
        return Err(format!("{addr} is not an IPv6 address"));
    };
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(format!("{addr} is not a unicast address"));
    }
    if addr.is_loopback() || addr.is_unicast_link_local() {
        return Err(format!("{addr}: a global or unique local address (the port's link-local one comes from its MAC)"));
    }
    Ok(IfaceAddr { addr, prefix_len })
}

/// `192.0.2.1:4500` or `[2001:db8::1]:4500`: a unicast address (IPv6:
/// global or unique local, not link-local) and a port.
fn parse_socket(s: &str) -> Result<SocketAddr, String> {
    let sa: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not a socket address like 192.0.2.1:4500 or [2001:db8::1]:4500"))?;
    let unicast = match sa.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => {
            let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
            !(ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || link_local || ip.to_ipv4_mapped().is_some())
        }
    };
    let ip = sa.ip();
    if !unicast {
        return Err(format!("{ip} is not a unicast address (IPv6: not link-local, not IPv4-mapped)"));
    }
    if sa.port() == 0 {
        return Err(format!("{s}: UDP port 0 is not allowed"));
    }
    // A scope (`%1`) means nothing for a global address and made two
    // spellings of one socket (found by review: two tunnels on one local
    // address and port passed the uniqueness rule).
    if let SocketAddr::V6(v6) = sa {
        if v6.scope_id() != 0 || v6.flowinfo() != 0 {
            return Err(format!("{s}: no scope id (%...) on a tunnel address"));
        }
    }
    Ok(sa)
}

// ---------------------------------------------------------------------------
// NAT: the `nat` section. Translation happens once, to inner packets, at the
// tunnel endpoint (before spraying on the way out, after re-ordering on the
// way in), so the choice of tunnel never splits a flow's NAT state. These
// are the validated rules; the dataplane's NAT engine maps from them.

/// Default SNAT source-port range: above the well-known and registered
/// ports most hosts bind (RFC 6335 section 6 puts dynamic ports at
/// 49152..=65535; 1024 up keeps more ports per pool address).
pub const DEFAULT_SNAT_PORTS: &str = "1024-65535";

/// The `nat` section as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Source translation of inner packets leaving through a tunnel.
    #[serde(default)]
    pub snat: Vec<SnatConfig>,
    /// Port forwards: inner packets arriving from a tunnel for `external`.
    #[serde(default)]
    pub dnat: Vec<DnatConfig>,
    /// IPv6 prefix translation (NPTv6, RFC 6296): stateless, 1:1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nptv6: Vec<Nptv6Config>,
    /// Sessions each worker keeps at most (tables are allocated for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// Idle timeouts, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<NatTimeoutsConfig>,
}

impl NatConfig {
    pub fn is_empty(&self) -> bool {
        self.snat.is_empty()
            && self.dnat.is_empty()
            && self.nptv6.is_empty()
            && self.max_sessions.is_none()
            && self.timeouts.is_none()
    }
}

/// `nat.timeouts` as written: seconds, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatTimeoutsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_transitory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_opening: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<u64>,
}

/// Default `nat.max_sessions`: 2^18 per worker (~27 MB of tables).
pub const DEFAULT_NAT_MAX_SESSIONS: u32 = 1 << 18;
/// Largest `nat.max_sessions` per worker.
pub const MAX_NAT_SESSIONS: u32 = 1 << 24;
/// Longest idle timeout accepted: a week.
pub const MAX_NAT_TIMEOUT: u64 = 7 * 24 * 3600;

/// Validated idle timeouts, in seconds. Defaults: RFC 5382's floors for TCP
/// (2 h 4 min established, 4 min after FIN/RST), 30 s for an unanswered
/// SYN, RFC 4787's 2 min for UDP, RFC 5508's 60 s for ICMP queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTimeouts {
    pub tcp_established: u64,
    pub tcp_transitory: u64,
    pub tcp_opening: u64,
    pub udp: u64,
    pub icmp: u64,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts { tcp_established: 2 * 3600 + 4 * 60, tcp_transitory: 4 * 60, tcp_opening: 30, udp: 120, icmp: 60 }
    }
}

/// One SNAT rule: inner sources in `match` leaving for `peer` (any peer
/// when absent) take an address of `pool` and a port of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    pub name: String,
    /// Inner source prefix, `10.1.0.0/16`; host bits must be clear.
    pub r#match: String,
    /// Name of the peer whose traffic is translated; every peer if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Translated source addresses, of the family of `match`.
    pub pool: Vec<String>,
    /// Translated source ports, `lo-hi` or one port.
    #[serde(default = "default_snat_ports")]
    pub ports: String,
}

/// `nat.nptv6[]`: inner IPv6 packets from `internal` leaving for `peer`
/// (every peer when absent) take the same address in `external` (the
/// prefix swapped and one 16-bit word below it adjusted, so no checksum
/// changes); packets arriving for `external` go back to `internal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nptv6Config {
    pub name: String,
    /// Internal prefix, `fd00:1::/48`; host bits clear; 1 to 64 bits.
    pub internal: String,
    /// External prefix of the same length.
    pub external: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Most `nat.nptv6` rules: a packet looks them up one by one (~1 ns a
/// rule; 64 rules cost ~60-75 ns a packet more than one).
pub const MAX_NPTV6_RULES: usize = 64;

fn default_snat_ports() -> String {
    DEFAULT_SNAT_PORTS.to_string()
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatProtocol {
    Tcp,
    Udp,
}

impl NatProtocol {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            NatProtocol::Tcp => 6,
            NatProtocol::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NatProtocol::Tcp => "tcp",
            NatProtocol::Udp => "udp",
        }
    }
}

/// One DNAT rule: `external:port/protocol` is forwarded to
/// `internal:internal_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnatConfig {
    pub name: String,
    /// Address the far side sends to.
    pub external: String,
    pub protocol: NatProtocol,
    pub port: u32,
    /// Inner host it is forwarded to, of the family of `external`.
    pub internal: String,
    /// Port on the inner host; `port` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<u32>,
}

/// A validated SNAT rule, at its index in [`Nat::snat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatRule {
    pub name: String,
    pub r#match: Prefix,
    /// Index in [`Tables::peers`]; `None` is every peer.
    pub peer: Option<usize>,
    /// Never empty; every address of the family of `match`.
    pub pool: Vec<IpAddr>,
    /// Inclusive port range, `lo <= hi`, `lo >= 1`.
    pub ports: (u16, u16),
}

/// A validated DNAT rule, at its index in [`Nat::dnat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRule {
    pub name: String,
    pub external: IpAddr,
    pub protocol: NatProtocol,
    pub port: u16,
    /// Same family as `external`.
    pub internal: IpAddr,
    pub internal_port: u16,
}

/// A validated NPTv6 rule, at its index in [`Nat::nptv6`]: IPv6 prefixes
/// of one length, 1..=64; external prefixes never overlap; internal ones
/// overlap only for different peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nptv6Rule {
    pub name: String,
    pub internal: Prefix,
    pub external: Prefix,
    /// Index in [`Tables::peers`]; `None` is every peer.
    pub peer: Option<usize>,
}

/// The validated NAT rules. SNAT matches of one peer never overlap (nor
/// overlap a rule for every peer), so at most one rule applies to a packet;
/// no two DNAT rules share external address, protocol and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    pub snat: Vec<SnatRule>,
    pub dnat: Vec<DnatRule>,
    pub nptv6: Vec<Nptv6Rule>,
    /// Sessions per worker, 1..=[`MAX_NAT_SESSIONS`].
    pub max_sessions: u32,
    pub timeouts: NatTimeouts,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            snat: Vec::new(),
            dnat: Vec::new(),
            nptv6: Vec::new(),
            max_sessions: DEFAULT_NAT_MAX_SESSIONS,
            timeouts: NatTimeouts::default(),
        }
    }
}

/// A prefix as an inclusive range of addresses: (is IPv6, first, last).
fn prefix_range(p: &Prefix) -> (bool, u128, u128) {
    let len = p.prefix_len() as u32;
    match p.addr() {
        IpAddr::V4(a) => {
            let first = u32::from(a) as u128;
            let size = 1u128 << (32 - len);
            (false, first, first + size - 1)
        }
        IpAddr::V6(a) => {
            let first = u128::from(a);
            let host = if len == 0 { u128::MAX } else { (1u128 << (128 - len)) - 1 };
            (true, first, first | host)
        }
    }
}

/// `lo-hi` or `port`, within 1..=65535, `lo <= hi`.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        let p = p.trim();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return Err(format!("{s:?} is not a port range like 1024-65535"));
        }
        match p.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is outside 1..=65535")),
            Err(_) => Err(format!("{s:?} is not a port range like 1024-65535")),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("range {lo}-{hi} is empty (first port above last)"));
    }
    Ok((lo, hi))
}

fn check_port(p: u32) -> Result<u16, String> {
    match p {
        1..=65535 => Ok(p as u16),
        _ => Err(format!("port {p} is outside 1..=65535")),
    }
}

/// A translated address: unicast, not unspecified.
fn parse_nat_addr(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
    let bad = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err(format!("{ip} is not a unicast address"));
    }
    Ok(ip)
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Validates the `nat` section; `peers` is peer name to index.
/// Why an IPv6 NAT rule is refused: the dataplane's NAT translates IPv4.
const NAT_IPV4_ONLY: &str = "snat and dnat rules are IPv4 only (IPv6 prefixes are translated by nat.nptv6)";

fn resolve_nat(config: &NatConfig, peers: &HashMap<&str, usize>) -> Result<Nat, ConfigError> {
    unique_names("nat.snat", config.snat.iter().map(|r| r.name.as_str()))?;
    unique_names("nat.dnat", config.dnat.iter().map(|r| r.name.as_str()))?;

    let mut snat = Vec::with_capacity(config.snat.len());
    for (i, r) in config.snat.iter().enumerate() {
        let at = |f: &str| format!("nat.snat[{i}].{f}");
        let matched: Prefix = r.r#match.parse().map_err(|e| invalid(at("match"), e))?;
        if !matched.addr().is_ipv4() {
            return Err(invalid(at("match"), NAT_IPV4_ONLY));
        }
        let peer = match &r.peer {
            None => None,
            Some(name) => Some(
                *peers
                    .get(name.as_str())
                    .ok_or_else(|| invalid(at("peer"), format!("no peer named {name:?}")))?,
            ),
        };
        if r.pool.is_empty() {
            return Err(invalid(at("pool"), "needs at least one address"));
        }
        let mut pool = Vec::with_capacity(r.pool.len());
        let mut in_pool: HashMap<IpAddr, usize> = HashMap::with_capacity(r.pool.len());
        for (j, a) in r.pool.iter().enumerate() {
            let field = format!("nat.snat[{i}].pool[{j}]");
            let ip = parse_nat_addr(a).map_err(|e| invalid(&field, e))?;
            if ip.is_ipv4() != matched.addr().is_ipv4() {
                return Err(invalid(
                    field,
                    format!(
                        "{ip} is {}, the match {matched} is {}",
                        family(&ip),
                        family(&matched.addr())
                    ),
                ));
            }
            if let Some(k) = in_pool.insert(ip, j) {
                return Err(invalid(field, format!("{ip} is already pool[{k}]")));
            }
            pool.push(ip);
        }
        let ports = parse_port_range(&r.ports).map_err(|e| invalid(at("ports"), e))?;
        snat.push(SnatRule { name: r.name.clone(), r#match: matched, peer, pool, ports });
    }
    check_snat_overlaps(&snat, &config.snat)?;

    // Pool address -> (first port, last port, SNAT rule), for the check below.
    let mut pooled: HashMap<IpAddr, Vec<(u16, u16, usize)>> = HashMap::new();
    for (j, r) in snat.iter().enumerate() {
        for ip in &r.pool {
            pooled.entry(*ip).or_default().push((r.ports.0, r.ports.1, j));
        }
    }
    // Each address's ranges by first port, each with the furthest-reaching
    // of it and those before it: a forward's port is inside one of them
    // if the last range starting at or below it reaches it this way (a
    // binary search; a scan of every rule sharing one pool address made
    // many rules on one address quadratic, found by review).
    for ranges in pooled.values_mut() {
        ranges.sort_unstable();
        let mut reach: Option<(u16, u16, usize)> = None;
        for r in ranges.iter_mut() {
            if reach.is_none_or(|(_, hi, _)| r.1 > hi) {
                reach = Some(*r);
            }
            let (_, hi, j) = reach.expect("set above");
            (r.1, r.2) = (hi, j);
        }
    }
    let inside_pool = |external: &IpAddr, port: u16| -> Option<usize> {
        let ranges = pooled.get(external)?;
        let at = ranges.partition_point(|(lo, _, _)| *lo <= port);
        let &(_, hi, j) = ranges.get(at.checked_sub(1)?)?;
        (port <= hi).then_some(j)
    };
    let mut dnat = Vec::with_capacity(config.dnat.len());
    let mut seen: HashMap<(IpAddr, NatProtocol, u16), usize> = HashMap::new();
    for (i, r) in config.dnat.iter().enumerate() {
        let at = |f: &str| format!("nat.dnat[{i}].{f}");
        let external = parse_nat_addr(&r.external).map_err(|e| invalid(at("external"), e))?;
        if !external.is_ipv4() {
            return Err(invalid(at("external"), NAT_IPV4_ONLY));
        }
        let port = check_port(r.port).map_err(|e| invalid(at("port"), e))?;
        let internal = parse_nat_addr(&r.internal).map_err(|e| invalid(at("internal"), e))?;
        if internal.is_ipv4() != external.is_ipv4() {
            return Err(invalid(
                at("internal"),
                format!("{internal} is {}, external {external} is {}", family(&internal), family(&external)),
            ));
        }
        let internal_port = check_port(r.internal_port.unwrap_or(r.port))
            .map_err(|e| invalid(at("internal_port"), e))?;
        let proto = r.protocol.name();
        if let Some(first) = seen.insert((external, r.protocol, port), i) {
            return Err(invalid(
                at("port"),
                format!("{external} {proto} port {port} is already forwarded by nat.dnat[{first}]"),
            ));
        }
        // SNAT must never hand out a port a forward owns.
        if let Some(j) = inside_pool(&external, port) {
            return Err(invalid(
                at("port"),
                format!(
                    "{external} port {port} is inside the ports of nat.snat[{j}], whose pool holds {external}"
                ),
            ));
        }
        dnat.push(DnatRule { name: r.name.clone(), external, protocol: r.protocol, port, internal, internal_port });
    }
    let max_sessions = config.max_sessions.unwrap_or(DEFAULT_NAT_MAX_SESSIONS);
    if !(1..=MAX_NAT_SESSIONS).contains(&max_sessions) {
        return Err(invalid("nat.max_sessions", format!("{max_sessions} is not in 1..={MAX_NAT_SESSIONS}")));
    }
    let d = NatTimeouts::default();
    let t = config.timeouts.clone().unwrap_or_default();
    let secs = |name: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
        let v = v.unwrap_or(default);
        if !(1..=MAX_NAT_TIMEOUT).contains(&v) {
            return Err(invalid(format!("nat.timeouts.{name}"), format!("{v} s is not in 1..={MAX_NAT_TIMEOUT}")));
        }
        Ok(v)
    };
    let timeouts = NatTimeouts {
        tcp_established: secs("tcp_established", t.tcp_established, d.tcp_established)?,
        tcp_transitory: secs("tcp_transitory", t.tcp_transitory, d.tcp_transitory)?,
        tcp_opening: secs("tcp_opening", t.tcp_opening, d.tcp_opening)?,
        udp: secs("udp", t.udp, d.udp)?,
        icmp: secs("icmp", t.icmp, d.icmp)?,
    };
    let nptv6 = resolve_nptv6(&config.nptv6, peers)?;
    Ok(Nat { snat, dnat, nptv6, max_sessions, timeouts })
}

fn resolve_nptv6(config: &[Nptv6Config], peers: &HashMap<&str, usize>) -> Result<Vec<Nptv6Rule>, ConfigError> {
    unique_names("nat.nptv6", config.iter().map(|r| r.name.as_str()))?;
    if config.len() > MAX_NPTV6_RULES {
        return Err(invalid("nat.nptv6", format!("{} rules, at most {MAX_NPTV6_RULES}", config.len())));
    }
    let mut rules: Vec<Nptv6Rule> = Vec::with_capacity(config.len());
    for (i, r) in config.iter().enumerate() {
        let at = |f: &str| format!("nat.nptv6[{i}].{f}");
        let prefix = |f: &str, s: &str| -> Result<Prefix, ConfigError> {
            let p: Prefix = s.parse().map_err(|e| invalid(at(f), e))?;
            if !p.addr().is_ipv6() {
                return Err(invalid(at(f), format!("{p} is not an IPv6 prefix (NPTv6 translates IPv6; nat.snat is for IPv4)")));
            }
            if !(1..=64).contains(&p.prefix_len()) {
                return Err(invalid(at(f), format!("{p}: NPTv6 prefixes are 1 to 64 bits long")));
            }
            Ok(p)
        };
        let internal = prefix("internal", &r.internal)?;
        let external = prefix("external", &r.external)?;
        if internal.prefix_len() != external.prefix_len() {
            return Err(invalid(at("external"), format!("{external} is not as long as the internal prefix {internal}")));
        }
        let peer = match &r.peer {
            None => None,
            Some(name) => Some(*peers.get(name.as_str()).ok_or_else(|| invalid(at("peer"), format!("no peer named {name:?}")))?),
        };
        let overlaps = |a: &Prefix, b: &Prefix| {
            let ((_, a0, a1), (_, b0, b1)) = (prefix_range(a), prefix_range(b));
            a0 <= b1 && b0 <= a1
        };
        for (j, o) in rules.iter().enumerate() {
            if overlaps(&external, &o.external) {
                return Err(invalid(at("external"), format!("{external} overlaps nat.nptv6[{j}].external {}", o.external)));
            }
            if (peer.is_none() || o.peer.is_none() || peer == o.peer) && overlaps(&internal, &o.internal) {
                return Err(invalid(at("internal"), format!("{internal} overlaps nat.nptv6[{j}].internal {} for the same peer", o.internal)));
            }
        }
        rules.push(Nptv6Rule { name: r.name.clone(), internal, external, peer });
    }
    Ok(rules)
}

/// Refuses two SNAT matches that overlap for the same peer (a rule without
/// a peer is for every peer). Sorting makes it O(n log n): 100,000 rules
/// validate in milliseconds.
fn check_snat_overlaps(rules: &[SnatRule], config: &[SnatConfig]) -> Result<(), ConfigError> {
    let overlap = |a: usize, b: usize| {
        let (first, later) = if a < b { (a, b) } else { (b, a) };
        let peer = match &config[later].peer.as_ref().or(config[first].peer.as_ref()) {
            Some(p) => format!("peer {p:?}"),
            None => "every peer".to_string(),
        };
        invalid(
            format!("nat.snat[{later}].match"),
            format!(
                "{} overlaps nat.snat[{first}].match {} for {peer}",
                rules[later].r#match, rules[first].r#match
            ),
        )
    };
    // Per peer (None included): sorted by first address, any overlap shows
    // between a range and the furthest-reaching range before it.
    type Ranges = Vec<((bool, u128, u128), usize)>;
    let mut by_peer: std::collections::BTreeMap<Option<usize>, Ranges> = Default::default();
    for (i, r) in rules.iter().enumerate() {
        by_peer.entry(r.peer).or_default().push((prefix_range(&r.r#match), i));
    }
    for list in by_peer.values_mut() {
        list.sort_unstable();
        let mut reach: Option<((bool, u128), usize)> = None;
        for &((v6, first, last), i) in list.iter() {
            if let Some(((rv6, rlast), j)) = reach {
                if rv6 == v6 && first <= rlast {
                    return Err(overlap(i, j));
                }
            }
            if reach.is_none_or(|((rv6, rlast), _)| rv6 != v6 || last > rlast) {
                reach = Some(((v6, last), i));
            }
        }
    }
    // Rules for every peer against the rules of each peer: the every-peer
    // ranges are disjoint (checked above), so for a range the only
    // candidate is the every-peer range starting last at or before its end.
    let Some(any) = by_peer.get(&None) else {
        return Ok(());
    };
    for (peer, list) in &by_peer {
        if peer.is_none() {
            continue;
        }
        for &((v6, first, last), i) in list {
            let k = any.partition_point(|&((av6, afirst, _), _)| (av6, afirst) <= (v6, last));
            if k > 0 {
                let ((av6, _, alast), j) = any[k - 1];
                if av6 == v6 && alast >= first {
                    return Err(overlap(i, j));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_matches_the_documented_formula() {
        assert_eq!(FRAME_OVERHEAD_V4, 20 + 8 + 16 + 3 + 2 + 16);
        assert_eq!(DEFAULT_MTU as usize - FRAME_OVERHEAD_V4, 1435);
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert_eq!(parse_hex("0xABcd").unwrap(), vec![0xab, 0xcd]);
        assert!(parse_hex("abc").unwrap_err().contains("odd"));
        assert!(parse_hex("zz").unwrap_err().contains("offset 0"));
        assert!(parse_hex("ab cd").unwrap_err().contains("offset 2"));
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn keys_and_salts() {
        assert!(matches!(
            parse_key(&"11".repeat(16)),
            Ok(AesGcmKey::Aes128(_))
        ));
        assert!(matches!(
            parse_key(&"11".repeat(32)),
            Ok(AesGcmKey::Aes256(_))
        ));
        assert_eq!(
            parse_key(&"11".repeat(15)).unwrap_err(),
            "expected 16 or 32 bytes of hex, got 15"
        );
        assert_eq!(parse_salt("01020304").unwrap(), [1, 2, 3, 4]);
        assert!(parse_salt("010203").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:FF").unwrap(),
            [2, 0, 0, 0, 10, 255]
        );
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:00:00:00:00:01",
            "02-00-00-00-00-01",
            "02:00:00:00:00:+1",
            "",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert!(parse_unicast_mac("ff:ff:ff:ff:ff:ff").is_err());
        assert!(parse_unicast_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_unicast_mac("00:00:00:00:00:00").is_err());
    }

    #[test]
    fn spis() {
        assert!(check_spi(0).is_err());
        assert!(check_spi(1).is_err());
        assert!(check_spi(255).is_err());
        assert_eq!(check_spi(256).unwrap(), Spi(256));
        assert_eq!(check_spi(u32::MAX).unwrap(), Spi(u32::MAX));
    }

    #[test]
    fn socket_addresses() {
        assert_eq!(parse_socket("192.0.2.1:4500").unwrap().port(), 4500);
        assert_eq!(parse_socket("[2001:db8::1]:4500").unwrap(), "[2001:db8::1]:4500".parse().unwrap());
        assert!(parse_socket("[fe80::1]:4500").unwrap_err().contains("unicast"));
        assert!(parse_socket("[::ffff:192.0.2.1]:4500").is_err());
        assert!(parse_socket("[::]:4500").is_err());
        assert!(parse_socket("[ff02::1]:4500").is_err());
        assert!(parse_socket("192.0.2.1").is_err());
        assert!(parse_socket("192.0.2.1:0").is_err());
        assert!(parse_socket("0.0.0.0:4500").is_err());
    }
}
