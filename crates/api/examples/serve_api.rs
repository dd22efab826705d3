//! A single site with only the admin API, for trying the API and fuzzing it
//! (`tests/interop/schemathesis.sh`) before `maildr serve` grows an `[api]` section.
//!
//! cargo run -p maildr-api --example serve_api -- --data-dir DIR --listen 127.0.0.1:PORT --token T
//!
//! Prints `listening on ADDR` once it accepts connections; stops on SIGTERM or Ctrl-C.
//! It serves no mail and is never part of a deployment.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use maildr_api::{ApiSettings, ApiState};
use maildr_cluster::{Cluster, WritePathLimits};
use maildr_config::ClusterSection;
use maildr_store::Store;

#[derive(Parser)]
struct Args {
    /// The site's data directory (created when missing).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Bearer token (at least 16 bytes).
    #[arg(long, env = "MAILDR_API_TOKEN")]
    token: String,
    #[arg(long, default_value = "dev")]
    site: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store =
        Store::open(&args.data_dir).with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let cluster = Cluster::single_site(store, WritePathLimits::default());
    let settings = ApiSettings { listen: args.listen, token: args.token, site: args.site };
    let state = ApiState::new(&settings, cluster, &ClusterSection::default())?;
    let listener =
        tokio::net::TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(maildr_api::serve(listener, state, stop_rx));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}
