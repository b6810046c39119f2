//! Kafka connections: length-prefixed frames, bounded in size, pipelined
//! (up to `max_pipelined` requests in progress) but answered strictly in
//! request order. A frame that cannot be served closes the connection; other
//! connections are unaffected.

use crate::dispatch::{Dispatcher, Outcome, Sequenced};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Accepts Kafka connections until `shutdown`, then drains: every
/// connection stops reading new requests, answers the ones in progress and
/// closes; returns once all connections are closed.
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let d = dispatcher.clone();
                    let stop = shutdown.clone();
                    connections.spawn(async move {
                        if let Err(e) = handle(stream, d, format!("/{}", peer.ip()), stop).await {
                            tracing::debug!(%peer, error = %e, "connection closed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining client connections");
    }
    while connections.join_next().await.is_some() {}
}

async fn handle(
    stream: TcpStream,
    d: Arc<Dispatcher>,
    host: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let host: Arc<str> = host.into();
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) =
        mpsc::channel::<tokio::task::JoinHandle<Outcome>>(d.config().max_pipelined.max(1));
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::new(wr);
        while let Some(h) = rx.recv().await {
            // Never hold written responses while waiting for a slow one.
            if !h.is_finished() {
                wr.flush().await?;
            }
            match h.await {
                Ok(Outcome::Respond(body)) => {
                    wr.write_all(&(body.len() as u32).to_be_bytes()).await?;
                    wr.write_all(&body).await?;
                }
                Ok(Outcome::Silent) => {}
                Ok(Outcome::Close) | Err(_) => {
                    wr.flush().await?;
                    return wr.into_inner().shutdown().await;
                }
            }
            if rx.is_empty() {
                wr.flush().await?;
            }
        }
        wr.flush().await
    });
    let max = d.config().max_frame_bytes;
    loop {
        let len = tokio::select! {
            len = rd.read_u32() => match len {
                Ok(len) => len,
                Err(_) => break,
            },
            // Draining: no new requests; those in progress are answered.
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let len = len as usize;
        if len > max || len < 8 {
            tracing::warn!(len, max, "rejecting frame: size out of bounds");
            break;
        }
        let mut buf = BytesMut::zeroed(len);
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        let (d2, host) = (d.clone(), host.clone());
        let (seq_tx, seq_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            d2.dispatch(buf.freeze(), &host, Sequenced::new(seq_tx))
                .await
        });
        if tx.send(task).await.is_err() {
            break;
        }
        // Kafka answers and applies a connection's requests in order: the
        // next one starts once this one's place in the log is fixed.
        let _ = seq_rx.await;
    }
    drop(tx);
    writer.await.unwrap_or(Ok(()))
}
