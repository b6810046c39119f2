//! A TCP link between one process and a server that a test can cut and
//! heal, as a network partition would: while cut, nothing passes in either
//! direction, but no connection is reset either (a peer sees only silence,
//! and learns of the partition from its own timeouts); connections made
//! meanwhile are accepted and never answered. When the link heals, the
//! connections it held are closed, as connections that timed out during
//! the partition would be, and new ones pass again.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable link to `upstream` (see the module doc); dropped, it stops
/// accepting.
pub struct TcpLink {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    acceptor: JoinHandle<()>,
}

impl TcpLink {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpLink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let addr = listener.local_addr().expect("link address");
        let (cut, state) = watch::channel(false);
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(carry(client, upstream, state.clone()));
            }
        });
        TcpLink {
            addr,
            cut,
            acceptor,
        }
    }

    /// `http://` and the link's address.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Partitions the link: nothing passes until [`Self::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Ends the partition: the held connections close, new ones pass.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpLink {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Forwards one connection while the link is whole; holds it silently
/// while it is cut; closes it when the cut heals.
async fn carry(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow() {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = client.set_nodelay(true);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = cut.wait_for(|c| *c) => {}
        }
        // Cut: both sockets stay open, unread and unwritten, until the heal.
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let _ = cut.wait_for(|c| !*c).await;
}
