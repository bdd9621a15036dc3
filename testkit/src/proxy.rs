//! A TCP proxy between a store and its database that can cut, delay and half-open
//! connections, for fault tests (a lost connection, a slow network, a socket that looks
//! open while nothing crosses it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the bytes of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards them.
    Pass,
    /// Forwards them after a delay.
    Delay(Duration),
    /// Keeps both sockets open and forwards nothing: a half-open connection.
    Stall,
    /// Closes both sockets.
    Cut,
}

/// A proxy listening on 127.0.0.1, forwarding to `upstream`. Dropping it closes every
/// connection.
pub struct FaultProxy {
    addr: SocketAddr,
    /// The mode of connections accepted from now on.
    new: watch::Sender<Mode>,
    /// Each open connection's own mode.
    open: Arc<Mutex<Vec<watch::Sender<Mode>>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (inside a Tokio runtime).
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (new, _) = watch::channel(Mode::Pass);
        let open: Arc<Mutex<Vec<watch::Sender<Mode>>>> = Arc::default();
        let (modes, conns) = (new.subscribe(), Arc::clone(&open));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *modes.borrow();
                if mode == Mode::Cut {
                    continue; // refused: dropped at once
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (tx, rx) = watch::channel(mode);
                conns.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                tokio::spawn(relay(client, server, rx));
            }
        });
        Ok(FaultProxy {
            addr,
            new,
            open,
            accept,
        })
    }

    /// A proxy to the host and port of a `postgres://` URL (port 5432 when none is given).
    pub async fn for_url(url: &str) -> std::io::Result<FaultProxy> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let target = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        let upstream = tokio::net::lookup_host(target)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("the URL's host does not resolve"))?;
        FaultProxy::start(upstream).await
    }

    /// The address to connect to instead of the database's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}{}{path}",
            userinfo.unwrap_or_default(),
            self.addr
        )
    }

    fn set(&self, existing: Mode, future: Mode) {
        self.new.send_replace(future);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|tx| tx.send(existing).is_ok());
    }

    /// Every connection forwards again, at once.
    pub fn pass(&self) {
        self.set(Mode::Pass, Mode::Pass);
    }

    /// Closes every open connection and refuses new ones: the database is away.
    pub fn cut(&self) {
        self.set(Mode::Cut, Mode::Cut);
    }

    /// Open connections stay open but forward nothing (half-open: neither side learns it);
    /// new connections pass, as when a network path came back but old sockets are dead.
    pub fn stall_open_connections(&self) {
        self.set(Mode::Stall, Mode::Pass);
    }

    /// Every chunk of bytes waits `delay` before it is forwarded.
    pub fn delay(&self, delay: Duration) {
        self.set(Mode::Delay(delay), Mode::Delay(delay));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Cut, Mode::Cut);
    }
}

async fn relay(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pipe(cr, sw, mode.clone()));
    let down = tokio::spawn(pipe(sr, cw, mode));
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to` as the mode allows; returns when either side closes or the
/// connection is cut.
async fn pipe<R, W>(mut from: R, mut to: W, mut mode: watch::Receiver<Mode>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Wait while stalled; stop when cut.
        let current = loop {
            let m = *mode.borrow_and_update();
            match m {
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Cut => return,
                other => break other,
            }
        };
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Mode::Delay(d) = current {
            tokio::time::sleep(d).await;
        }
        // Stalled while the bytes were in hand: hold them until it passes again.
        loop {
            match *mode.borrow() {
                Mode::Stall => {}
                Mode::Cut => return,
                _ => break,
            }
            if mode.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
