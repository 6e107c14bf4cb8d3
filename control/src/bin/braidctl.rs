//! `braidctl`: braid's command line, over the control process's API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use braid_control::client::{encode_segment, Client, Endpoint, Reply};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(name = "braidctl", version, about = "braid's command line (talks to braid-control)")]
struct Cli {
    /// The API's Unix socket.
    #[arg(long, global = true, default_value = "/run/braid/control.sock")]
    socket: PathBuf,
    /// The API over TCP instead, http://host:port (needs --token-file).
    #[arg(long, global = true)]
    url: Option<String>,
    /// File holding the bearer token (with --url).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Changes only if the running document is at this generation (as
    /// `config get` printed it to stderr, or `status` shows): refused
    /// (412) if another change came first, instead of undoing it.
    #[arg(long, global = true)]
    if_match: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bundles, tunnels, weights, traffic, liveness, drops (like `wg show`).
    Show,
    /// Generation and the dataplane's state.
    Status,
    /// The whole configuration document.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Peers.
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
    },
    /// Bundles of tunnels.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// Tunnels inside a bundle.
    Tunnel {
        #[command(subcommand)]
        cmd: TunnelCmd,
    },
    /// Routes (inner prefix to peer).
    Route {
        #[command(subcommand)]
        cmd: RouteCmd,
    },
    /// NAT rules.
    Nat {
        #[command(subcommand)]
        cmd: NatCmd,
    },
    /// The dataplane's counters and gauges (non-zero ones unless --all).
    Stats {
        #[arg(long)]
        all: bool,
    },
    /// `show` every second until interrupted.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the running document (keys redacted).
    Get,
    /// Replace the running document with FILE ("-": stdin).
    Put { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    List,
    Add { name: String, bundle: String },
    Del { name: String },
}

#[derive(Subcommand, Debug)]
enum BundleCmd {
    List,
    /// Add the bundle in FILE (JSON, as in docs/config.md); "-": stdin.
    Add { file: PathBuf },
    /// Replace the bundle of the same name with FILE.
    Set { file: PathBuf },
    Del { name: String },
}

#[derive(Subcommand, Debug)]
enum TunnelCmd {
    /// Set the weight of tunnel INDEX of BUNDLE.
    Weight { bundle: String, index: usize, weight: u32 },
}

#[derive(Subcommand, Debug)]
enum RouteCmd {
    List,
    Add { prefix: String, peer: String },
    Del { prefix: String },
}

#[derive(Subcommand, Debug)]
enum NatCmd {
    /// Source NAT.
    Snat {
        #[command(subcommand)]
        cmd: SnatCmd,
    },
    /// Port forwards.
    Dnat {
        #[command(subcommand)]
        cmd: DnatCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SnatCmd {
    List,
    /// Translate sources in MATCH to addresses of POOL (comma-separated).
    Add {
        name: String,
        r#match: String,
        pool: String,
        /// Only traffic to this peer (default: every peer).
        #[arg(long)]
        peer: Option<String>,
        /// Source ports, lo-hi.
        #[arg(long)]
        ports: Option<String>,
    },
    Del { name: String },
}

#[derive(Subcommand, Debug)]
enum DnatCmd {
    List,
    /// Forward EXTERNAL:PORT/PROTOCOL to INTERNAL.
    Add {
        name: String,
        external: String,
        protocol: String,
        port: u32,
        internal: String,
        #[arg(long)]
        internal_port: Option<u32>,
    },
    Del { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braidctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(cli: &Cli) -> Result<Client, String> {
    let mut c = match &cli.url {
        Some(u) => Client::new(Endpoint::from_url(u)?),
        None => Client::new(Endpoint::Unix(cli.socket.clone())),
    };
    if let Some(p) = &cli.token_file {
        c.token = Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?.trim().to_string());
    }
    c.if_match = cli.if_match;
    Ok(c)
}

/// The API's error as one line: `field: reason`.
fn api_error(r: &Reply) -> String {
    match r.json() {
        Ok(v) if v["error"].is_object() => {
            let reason = v["error"]["reason"].as_str().unwrap_or("?");
            match v["error"]["field"].as_str() {
                Some(f) => format!("HTTP {}: {f}: {reason}", r.status),
                None => format!("HTTP {}: {reason}", r.status),
            }
        }
        _ => format!("HTTP {}: {}", r.status, r.text()),
    }
}

fn call(c: &Client, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
    let r = c.request(method, path, bytes.as_deref()).map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(api_error(&r));
    }
    r.json()
}

fn read_file(p: &PathBuf) -> Result<Value, String> {
    let text = if p.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        s
    } else {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

fn print_json(v: &Value) {
    out(&format!("{}\n", serde_json::to_string_pretty(v).expect("JSON")));
}

/// `println!` through [`out`]: a closed pipe (`| head`) is not a panic.
macro_rules! outln {
    ($($t:tt)*) => { out(&format!("{}\n", format_args!($($t)*))) };
}

/// Writes to stdout. Whoever read it is gone (`braidctl ... | head`): the
/// command is done, exit quietly (`watch` would loop on forever).
fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Prints a mutation's answer.
fn changed(cli: &Cli, v: Value) {
    if cli.json {
        print_json(&v);
    } else if v["changed"] == json!(false) {
        outln!("unchanged (generation {})", v["generation"]);
    } else {
        outln!("generation {}", v["generation"]);
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let c = client(cli)?;
    match &cli.cmd {
        Cmd::Show => show(cli, &c, false),
        Cmd::Watch { interval } => {
            if !(interval.is_finite() && *interval > 0.0) {
                return Err(format!("--interval {interval}: a positive number of seconds"));
            }
            let every = Duration::from_secs_f64(interval.clamp(0.1, 86_400.0));
            loop {
                show(cli, &c, true)?;
                std::thread::sleep(every);
            }
        }
        Cmd::Status => {
            let v = call(&c, "GET", "/v1/status", None)?;
            if cli.json {
                print_json(&v);
            } else {
                outln!("{}", status_line(&v));
            }
            Ok(())
        }
        Cmd::Config { cmd: ConfigCmd::Get } => {
            let r = c.request("GET", "/v1/config", None).map_err(|e| e.to_string())?;
            if !r.is_success() {
                return Err(api_error(&r));
            }
            // The generation on stderr: stdout stays the document, to edit
            // and put back with --if-match.
            if let Some(g) = r.header("x-braid-generation") {
                eprintln!("generation {g}");
            }
            print_json(&r.json()?);
            Ok(())
        }
        Cmd::Config { cmd: ConfigCmd::Put { file } } => {
            changed(cli, call(&c, "PUT", "/v1/config", Some(&read_file(file)?))?);
            Ok(())
        }
        Cmd::Peer { cmd } => match cmd {
            PeerCmd::List => list(cli, &c, "/v1/peers", |p| format!("{}  bundle {}", p["name"].as_str().unwrap_or("?"), p["bundle"].as_str().unwrap_or("?"))),
            PeerCmd::Add { name, bundle } => {
                changed(cli, call(&c, "POST", "/v1/peers", Some(&json!({ "name": name, "bundle": bundle })))?);
                Ok(())
            }
            PeerCmd::Del { name } => {
                changed(cli, call(&c, "DELETE", &format!("/v1/peers/{}", encode_segment(name)), None)?);
                Ok(())
            }
        },
        Cmd::Bundle { cmd } => match cmd {
            BundleCmd::List => list(cli, &c, "/v1/bundles", |b| {
                format!("{}  {} tunnels", b["name"].as_str().unwrap_or("?"), b["tunnels"].as_array().map_or(0, |t| t.len()))
            }),
            BundleCmd::Add { file } => {
                changed(cli, call(&c, "POST", "/v1/bundles", Some(&read_file(file)?))?);
                Ok(())
            }
            BundleCmd::Set { file } => {
                let b = read_file(file)?;
                let name = b["name"].as_str().ok_or("the bundle has no name")?.to_string();
                changed(cli, call(&c, "PUT", &format!("/v1/bundles/{}", encode_segment(&name)), Some(&b))?);
                Ok(())
            }
            BundleCmd::Del { name } => {
                changed(cli, call(&c, "DELETE", &format!("/v1/bundles/{}", encode_segment(name)), None)?);
                Ok(())
            }
        },
        Cmd::Tunnel { cmd: TunnelCmd::Weight { bundle, index, weight } } => {
            let path = format!("/v1/bundles/{}/tunnels/{index}/weight", encode_segment(bundle));
            changed(cli, call(&c, "PUT", &path, Some(&json!({ "weight": weight })))?);
            Ok(())
        }
        Cmd::Route { cmd } => match cmd {
            RouteCmd::List => list(cli, &c, "/v1/routes", |r| format!("{} -> {}", r["prefix"].as_str().unwrap_or("?"), r["peer"].as_str().unwrap_or("?"))),
            RouteCmd::Add { prefix, peer } => {
                changed(cli, call(&c, "POST", "/v1/routes", Some(&json!({ "prefix": prefix, "peer": peer })))?);
                Ok(())
            }
            RouteCmd::Del { prefix } => {
                changed(cli, call(&c, "DELETE", &format!("/v1/routes/{}", encode_segment(prefix)), None)?);
                Ok(())
            }
        },
        Cmd::Nat { cmd: NatCmd::Snat { cmd } } => match cmd {
            SnatCmd::List => list(cli, &c, "/v1/nat/snat", |r| {
                format!(
                    "{}  {} -> {} ports {}{}",
                    r["name"].as_str().unwrap_or("?"),
                    r["match"].as_str().unwrap_or("?"),
                    r["pool"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    r["ports"].as_str().unwrap_or("?"),
                    r["peer"].as_str().map(|p| format!(" (peer {p})")).unwrap_or_default()
                )
            }),
            SnatCmd::Add { name, r#match, pool, peer, ports } => {
                let mut rule = json!({ "name": name, "match": r#match, "pool": pool.split(',').map(str::trim).collect::<Vec<_>>() });
                if let Some(p) = peer {
                    rule["peer"] = json!(p);
                }
                if let Some(p) = ports {
                    rule["ports"] = json!(p);
                }
                changed(cli, call(&c, "POST", "/v1/nat/snat", Some(&rule))?);
                Ok(())
            }
            SnatCmd::Del { name } => {
                changed(cli, call(&c, "DELETE", &format!("/v1/nat/snat/{}", encode_segment(name)), None)?);
                Ok(())
            }
        },
        Cmd::Nat { cmd: NatCmd::Dnat { cmd } } => match cmd {
            DnatCmd::List => list(cli, &c, "/v1/nat/dnat", |r| {
                format!(
                    "{}  {}:{}/{} -> {}:{}",
                    r["name"].as_str().unwrap_or("?"),
                    r["external"].as_str().unwrap_or("?"),
                    r["port"],
                    r["protocol"].as_str().unwrap_or("?"),
                    r["internal"].as_str().unwrap_or("?"),
                    r.get("internal_port").unwrap_or(&r["port"])
                )
            }),
            DnatCmd::Add { name, external, protocol, port, internal, internal_port } => {
                let mut rule = json!({ "name": name, "external": external, "protocol": protocol, "port": port, "internal": internal });
                if let Some(p) = internal_port {
                    rule["internal_port"] = json!(p);
                }
                changed(cli, call(&c, "POST", "/v1/nat/dnat", Some(&rule))?);
                Ok(())
            }
            DnatCmd::Del { name } => {
                changed(cli, call(&c, "DELETE", &format!("/v1/nat/dnat/{}", encode_segment(name)), None)?);
                Ok(())
            }
        },
        Cmd::Stats { all } => {
            let v = call(&c, "GET", "/v1/stats", None)?;
            if cli.json {
                print_json(&v);
                return Ok(());
            }
            outln!(
                "boot {:#x}  generation {}  workers {}  torn {}",
                v["boot_id"].as_u64().unwrap_or(0),
                v["applied_generation"],
                v["workers"],
                v["torn_workers"]
            );
            for kind in ["counters", "gauges"] {
                if let Some(m) = v[kind].as_object() {
                    for (name, n) in m {
                        if *all || n.as_u64() != Some(0) {
                            outln!("{name:<48} {n}");
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn list(cli: &Cli, c: &Client, path: &str, line: impl Fn(&Value) -> String) -> Result<(), String> {
    let v = call(c, "GET", path, None)?;
    if cli.json {
        print_json(&v);
    } else {
        for item in v.as_array().into_iter().flatten() {
            outln!("{}", line(item));
        }
    }
    Ok(())
}

fn status_line(s: &Value) -> String {
    let dp = &s["dataplane"];
    let dataplane = if dp.is_null() {
        "no dataplane link (--shm not given)".to_string()
    } else if dp["attached"] != json!(true) {
        format!("dataplane not attached ({})", dp["segment"].as_str().unwrap_or("?"))
    } else {
        let alive = match dp["alive"].as_bool() {
            Some(true) => ", alive",
            Some(false) => ", NOT ALIVE (heartbeat stopped)",
            None => "",
        };
        let rejected = match dp["last_rejected"].as_object() {
            Some(r) => format!(", rejected generation {}: {}", r["generation"], r["reason"].as_str().unwrap_or("?")),
            None => String::new(),
        };
        format!(
            "dataplane applied {}{}{alive}{rejected}",
            dp["applied_generation"].as_u64().map_or("nothing yet".to_string(), |g| g.to_string()),
            if dp["in_sync"] == json!(true) { " (in sync)" } else { " (NOT in sync)" }
        )
    };
    format!("generation {}: {dataplane}", s["generation"])
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// What `show` prints: like `wg show`, a block per bundle and a line per
/// tunnel, with traffic from the stats segment when there is one.
fn show(cli: &Cli, c: &Client, clear: bool) -> Result<(), String> {
    let status = call(c, "GET", "/v1/status", None)?;
    let bundles = call(c, "GET", "/v1/bundles", None)?;
    let peers = call(c, "GET", "/v1/peers", None)?;
    let stats = match c.get("/v1/stats") {
        Ok(r) if r.is_success() => r.json().ok(),
        _ => None,
    };
    if cli.json {
        print_json(&json!({ "status": status, "bundles": bundles, "peers": peers, "stats": stats }));
        return Ok(());
    }
    let mut out = String::new();
    if clear {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!("{}\n", status_line(&status)));
    let counter = |name: String| stats.as_ref().and_then(|s| s["counters"][&name].as_u64());
    let gauge = |name: String| stats.as_ref().and_then(|s| s["gauges"][&name].as_u64());
    for b in bundles.as_array().into_iter().flatten() {
        let name = b["name"].as_str().unwrap_or("?");
        let peer = peers
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["bundle"].as_str() == Some(name))
            .and_then(|p| p["name"].as_str())
            .unwrap_or("(no peer)");
        out.push_str(&format!(
            "\nbundle: {name}\n  peer: {peer}\n  mode: {}  policy: {}\n",
            b["mode"].as_str().unwrap_or("?"),
            b["policy"].as_str().unwrap_or("?")
        ));
        for (i, t) in b["tunnels"].as_array().into_iter().flatten().enumerate() {
            out.push_str(&format!(
                "  tunnel {i}: {} -> {} via {}  spi out {:#x} in {:#x}  weight {}\n",
                t["local"].as_str().unwrap_or("?"),
                t["remote"].as_str().unwrap_or("?"),
                t["wan_port"].as_str().unwrap_or("?"),
                t["spi_out"].as_u64().unwrap_or(0),
                t["spi_in"].as_u64().unwrap_or(0),
                t["weight"]
            ));
            if stats.is_some() {
                let k = |m: &str| format!("tunnel/{name}/{i}/{m}");
                let g = |m: &str| format!("path/{name}/{i}/{m}");
                let alive = match gauge(g("alive")) {
                    Some(1) => "yes",
                    Some(_) => "NO",
                    None => "?",
                };
                let rtt = gauge(g("rtt_ns")).map(|ns| format!("  rtt {:.2} ms", ns as f64 / 1e6)).unwrap_or_default();
                out.push_str(&format!(
                    "    transfer: {} ({} pkts) sent, {} ({} pkts) received  alive: {alive}{rtt}\n",
                    human_bytes(counter(k("tx_bytes")).unwrap_or(0)),
                    counter(k("tx_packets")).unwrap_or(0),
                    human_bytes(counter(k("rx_bytes")).unwrap_or(0)),
                    counter(k("rx_packets")).unwrap_or(0),
                ));
            }
        }
    }
    if let Some(s) = &stats {
        let drops: Vec<String> = s["counters"]
            .as_object()
            .into_iter()
            .flatten()
            // Drop counters are `<kind>drop/<reason>` (`drop/`,
            // `engine_drop/`, `nat_in_drop/`...); a port or bundle whose name
            // holds "drop/" is not one.
            .filter(|(k, v)| k.split('/').next().is_some_and(|kind| kind.ends_with("drop")) && v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!("\ndrops: {}\n", if drops.is_empty() { "none".to_string() } else { drops.join(", ") }));
    }
    self::out(&out);
    Ok(())
}
