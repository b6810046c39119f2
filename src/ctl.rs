//! `kafscale ctl`: the control API (`kafscale.control.v1`) for humans and
//! scripts. Prints text, or JSON with `--json`.

use anyhow::Context;
use kafscale_proto::control::v1 as pb;
use pb::control_client::ControlClient;
use std::fmt::Write as _;

/// `kafscale ctl` arguments.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub command: CtlCommand,
    /// The process's HTTP/control address (its KAFSCALE_HTTP_ADDR).
    #[arg(long, global = true, default_value = "127.0.0.1:9093")]
    pub addr: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to ask the process.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum CtlCommand {
    /// Role, readiness, owned partitions and slots, WAL, caches, lease.
    Status,
    /// Worker: hand every partition to other workers and take none until
    /// undrained. Gateway: stop accepting connections.
    Drain,
    /// End a drain.
    Undrain,
    /// Worker: write the WAL buffer now and wait until it is durable.
    Flush,
}

/// Runs one `kafscale ctl` command against `args.addr`.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let mut client = ControlClient::connect(url.clone())
        .await
        .with_context(|| format!("connecting to the control API at {url}"))?;
    let out = match args.command {
        CtlCommand::Status => {
            let s = client.status(pb::StatusRequest {}).await?.into_inner();
            if args.json {
                serde_json::to_string_pretty(&s)?
            } else {
                status_text(&s)
            }
        }
        CtlCommand::Drain => {
            let r = client.drain(pb::DrainRequest {}).await?.into_inner();
            if args.json {
                serde_json::to_string_pretty(&r)?
            } else {
                format!("drained: {} partitions handed over", r.handed_over)
            }
        }
        CtlCommand::Undrain => {
            let r = client.undrain(pb::UndrainRequest {}).await?.into_inner();
            if args.json {
                serde_json::to_string_pretty(&r)?
            } else {
                "undrained".to_string()
            }
        }
        CtlCommand::Flush => {
            let r = client.flush(pb::FlushRequest {}).await?.into_inner();
            if args.json {
                serde_json::to_string_pretty(&r)?
            } else {
                format!(
                    "flushed: durable through WAL sequence {}",
                    r.durable_sequence
                )
            }
        }
    };
    println!("{out}");
    Ok(())
}

/// A status as text, one fact per line.
pub fn status_text(s: &pb::StatusResponse) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "role:      {} {} (id {})", s.role, s.version, s.id);
    let _ = writeln!(
        o,
        "ready:     {}{}",
        s.ready,
        if s.draining { " (draining)" } else { "" }
    );
    if let Some(l) = &s.lease {
        let _ = writeln!(o, "lease:     {} ({})", l.state, l.lease_id);
    }
    if let Some(g) = &s.gateway {
        let _ = writeln!(
            o,
            "gateway:   {} connections, {}, routing to {} workers",
            g.connections,
            if g.accepting {
                "accepting"
            } else {
                "not accepting"
            },
            g.workers
        );
    }
    if let Some(w) = &s.wal {
        let _ = writeln!(
            o,
            "wal:       stream epoch {}, next object {}, {} bytes buffered, {} flushes in flight{}",
            w.stream_epoch,
            w.next_sequence,
            w.buffered_bytes,
            w.inflight_flushes,
            if w.fenced { ", FENCED" } else { "" }
        );
    }
    if let Some(c) = &s.cache {
        let _ = writeln!(
            o,
            "cache:     tail {}/{} bytes, segment blocks {}/{} bytes",
            c.tail_cache_bytes,
            c.tail_cache_capacity_bytes,
            c.segment_cache_bytes,
            c.segment_cache_capacity_bytes
        );
    }
    if s.wal.is_some() {
        let _ = writeln!(o, "partitions: {}", s.partitions.len());
        for p in &s.partitions {
            let _ = writeln!(
                o,
                "  {}-{}  epoch {}  log start {}  high watermark {}  compacted {}",
                p.topic,
                p.partition,
                p.leader_epoch,
                p.log_start_offset,
                p.high_watermark,
                p.compacted_offset
            );
        }
        let _ = writeln!(o, "coordinator slots: {}", s.coordinator_slots.len());
        for c in &s.coordinator_slots {
            let _ = writeln!(
                o,
                "  slot {}  epoch {}  {} groups",
                c.slot, c.leader_epoch, c.groups
            );
        }
    }
    o.trim_end().to_string()
}
