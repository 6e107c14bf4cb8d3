//! `braid-control`: the control process. Serves the JSON API on a Unix
//! socket (0600) and, with `--listen`, on TCP behind a bearer token; keeps
//! the running configuration in `--state-dir`; pushes it to the dataplane
//! over the `--shm` segment.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use braid_config::{Config, Tables};
use braid_control::api::{self, AppState, Limits};
use braid_control::link::{Link, Snapshot};
use braid_control::store::{Running, StateDir};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "braid-control", version, about = "braid's control process: JSON API, persistence, tables to the dataplane")]
struct Args {
    /// Unix socket of the API (created 0600).
    #[arg(long, default_value = "/run/braid/control.sock")]
    socket: PathBuf,
    /// Also serve the API on this TCP address (needs --token-file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// File holding the bearer token TCP clients must send.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Where the running configuration is kept (config.json, 0600).
    #[arg(long, default_value = "/var/lib/braid")]
    state_dir: PathBuf,
    /// The dataplane's shared-memory segment (created by the dataplane).
    #[arg(long, value_name = "PATH")]
    shm: Option<PathBuf>,
    /// The dataplane's stats segment.
    #[arg(long, value_name = "PATH")]
    stats: Option<PathBuf>,
    /// A configuration to start from when the state directory holds none.
    #[arg(long, value_name = "FILE")]
    init_config: Option<PathBuf>,
    /// Requests handled at once; more are answered 503.
    #[arg(long, default_value_t = Limits::default().concurrent)]
    max_concurrent: usize,
    /// Largest body of PUT /v1/config, bytes.
    #[arg(long, default_value_t = Limits::default().config_body)]
    config_body_limit: usize,
    /// Largest body of any other request, bytes.
    #[arg(long, default_value_t = Limits::default().body)]
    body_limit: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("braid-control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        return Err(format!("--token-file {}: the token must be at least 16 characters", path.display()));
    }
    Ok(t)
}

fn initial_state(args: &Args, state: &StateDir) -> Result<Running, String> {
    let mut running = state.load().map_err(|e| e.to_string())?;
    if running.config.is_none() {
        if let Some(path) = &args.init_config {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            Tables::from_config(&config).map_err(|e| format!("{}: {e}", path.display()))?;
            running = Running { generation: running.generation + 1, config: Some(config) };
            state.save(&running).map_err(|e| e.to_string())?;
            eprintln!("braid-control: started from {} as generation {}", path.display(), running.generation);
        }
    }
    Ok(running)
}

/// Binds the Unix socket 0600, replacing a stale socket (never another
/// kind of file).
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!("{}: another process serves this socket", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(_) => return Err(format!("{}: exists and is not a socket", path.display())),
        Err(_) => {}
    }
    let l = tokio::net::UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(l)
}

fn run(args: Args) -> Result<(), String> {
    let token = match (&args.listen, &args.token_file) {
        (Some(_), None) => return Err("--listen needs --token-file: TCP clients must send a bearer token".into()),
        (_, Some(p)) => Some(read_token(p)?),
        (None, None) => None,
    };
    let state = StateDir::new(&args.state_dir).map_err(|e| e.to_string())?;
    let running = initial_state(&args, &state)?;
    eprintln!(
        "braid-control: generation {} ({})",
        running.generation,
        if running.config.is_some() { "configured" } else { "no configuration yet" }
    );
    let first = running
        .config
        .as_ref()
        .map(|c| Snapshot::new(running.generation, serde_json::to_vec(c).expect("a Config always serializes")));
    let link = args.shm.clone().map(|p| Link::spawn(p, args.stats.clone(), first));
    let limits = Limits { config_body: args.config_body_limit, body: args.body_limit, concurrent: args.max_concurrent.max(1), ..Limits::default() };
    let app = AppState::new(running, state, link.as_ref().map(|(l, _)| l.clone()), args.stats.clone(), limits);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let result = rt.block_on(async {
        let router = api::router(app);
        let unix = bind_unix(&args.socket)?;
        eprintln!("braid-control: API on {}", args.socket.display());
        let mut tasks = tokio::task::JoinSet::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        {
            let r = router.clone();
            let rx = stop_rx.clone();
            tasks.spawn(async move { axum::serve(unix, r).with_graceful_shutdown(shutdown(rx)).await.map_err(|e| e.to_string()) });
        }
        if let (Some(addr), Some(token)) = (&args.listen, token) {
            let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("--listen {addr}: {e}"))?;
            eprintln!("braid-control: API on tcp {} (bearer token)", tcp.local_addr().map(|a| a.to_string()).unwrap_or_default());
            let r = api::with_token(router, token);
            let rx = stop_rx.clone();
            use braid_control::listen::{serve, HEAD_TIMEOUT, MAX_CONNECTIONS, WRITE_TIMEOUT};
            tasks.spawn(async move {
                serve(tcp, r, MAX_CONNECTIONS, (HEAD_TIMEOUT, WRITE_TIMEOUT), rx).await;
                Ok(())
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        let result = tokio::select! {
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
            r = tasks.join_next() => match r {
                Some(Ok(Err(e))) => Err(e),
                _ => Ok(()),
            },
        };
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
        result
    });
    let _ = std::fs::remove_file(&args.socket);
    if let Some((l, h)) = link {
        l.stop();
        let _ = h.join();
    }
    eprintln!("braid-control: stopped");
    result
}
