//! The collector: UDP in, stamped datagrams out, never parsing and never blocking for long.
//!
//! [`bind`] opens the socket (dual stack, large receive buffer). [`spawn_receiver`] reads it,
//! stamps each datagram with the exporter's address and the receive time, and hands it to a
//! bounded [`Queue`] (bounded in bytes as well as datagrams); when the queue is full the
//! datagram is dropped and counted. [`spawn_pipe_sender`] drains the queue into the named pipe,
//! waiting for a reader and reconnecting when it goes away; while no reader is attached the
//! queue fills and then drops.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::frame::{self, Datagram};
use crate::stats::{self, Counters, RateLimit};

/// Binds the UDP socket: on `::` a dual-stack socket (IPv6 and IPv4-mapped), asking for a
/// `rcvbuf`-byte receive buffer. Returns the socket and the buffer size the kernel granted
/// (Linux reports twice the usable size; capped by `net.core.rmem_max`).
pub fn bind(addr: SocketAddr, rcvbuf: usize) -> io::Result<(UdpSocket, usize)> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    if let Err(e) = sock.set_recv_buffer_size(rcvbuf) {
        warn!(error = %e, rcvbuf, "cannot set the socket receive buffer");
    }
    let granted = sock.recv_buffer_size().unwrap_or(0);
    sock.bind(&addr.into())?;
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok((sock, granted))
}

/// A bounded queue of datagrams: at most `max_bytes` of payload in flight.
#[derive(Debug, Clone)]
pub struct Queue {
    tx: SyncSender<Datagram>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The consuming end of a [`Queue`].
#[derive(Debug)]
pub struct QueueRx {
    rx: Receiver<Datagram>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `max_datagrams` datagrams and `max_bytes` payload bytes.
pub fn queue(max_datagrams: usize, max_bytes: usize) -> (Queue, QueueRx) {
    let (tx, rx) = mpsc::sync_channel(max_datagrams.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Queue {
            tx,
            bytes: Arc::clone(&bytes),
            max_bytes,
        },
        QueueRx { rx, bytes },
    )
}

impl Queue {
    /// Enqueues without blocking; `false` when full (or the consumer is gone).
    pub fn try_push(&self, d: Datagram) -> bool {
        let len = d.payload.len();
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(d) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Queue {
    /// Enqueues, waiting while the queue is full; `false` when the consumer is gone.
    pub fn push_wait(&self, d: Datagram) -> bool {
        let len = d.payload.len();
        while self.bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            thread::sleep(Duration::from_millis(1));
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(d).is_err() {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl QueueRx {
    /// The next datagram, waiting at most `timeout`. `Err(Disconnected)` when every sender is gone
    /// and the queue is empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Datagram, RecvTimeoutError> {
        let d = self.rx.recv_timeout(timeout)?;
        self.bytes.fetch_sub(d.payload.len(), Ordering::Relaxed);
        Ok(d)
    }

    /// A datagram if one is waiting.
    pub fn try_recv(&self) -> Option<Datagram> {
        let d = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(d.payload.len(), Ordering::Relaxed);
        Some(d)
    }
}

/// Receives datagrams until `stop`, pushing them to `queue`; drops (counted, warned at most
/// every 10 s) when it is full.
pub fn spawn_receiver(
    sock: UdpSocket,
    queue: Queue,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("udp-recv".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut limit = RateLimit::new(Duration::from_secs(10));
            while !stop.load(Ordering::Relaxed) {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "UDP receive failed");
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let ts_micros = stats::now_micros();
                stats::add(&counters.packets_received, 1);
                stats::add(&counters.bytes_received, n as u64);
                let exporter = SocketAddr::new(canonical(from.ip()), from.port());
                let d = Datagram {
                    exporter,
                    ts_micros,
                    payload: buf[..n].to_vec(),
                };
                if !queue.try_push(d) {
                    stats::add(&counters.queue_drops, 1);
                    if let Some(suppressed) = limit.allow() {
                        warn!(
                            suppressed,
                            total = counters.queue_drops.load(Ordering::Relaxed),
                            "queue full (consumer absent or slow): dropping datagrams"
                        );
                    }
                }
            }
        })
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Creates the FIFO at `path` unless something is there already; a regular file in its place
/// is an error.
pub fn ensure_fifo(path: &Path) -> io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a named pipe", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o660),
                0,
            ) {
                Ok(()) => Ok(()),
                Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(io::Error::from(e)),
            }
        }
        Err(e) => Err(e),
    }
}

fn open_fifo_writer(path: &Path) -> io::Result<File> {
    // Non-blocking open fails with ENXIO while no reader is attached: we never hang here.
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    // Writes block from now on (a slow reader slows us; the queue in front absorbs it).
    rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty()).map_err(io::Error::from)?;
    Ok(f)
}

/// Drains `rx` into the named pipe at `path` until `stop` (then flushes what is queued, if a
/// reader is attached). Waits for a reader without consuming the queue, so datagrams wait in
/// the bounded queue, and reconnects after the reader goes away.
pub fn spawn_pipe_sender(
    path: PathBuf,
    rx: QueueRx,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("pipe-send".into()).spawn(move || {
        let mut out: Option<File> = None;
        let mut waiting_logged = false;
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let Some(f) = out.as_mut() else {
                if stopping {
                    return;
                }
                match open_fifo_writer(&path) {
                    Ok(f) => {
                        info!(path = %path.display(), "named pipe connected to a reader");
                        stats::add(&counters.pipe_reconnects, 1);
                        out = Some(f);
                        waiting_logged = false;
                    }
                    Err(e) => {
                        if !waiting_logged {
                            info!(path = %path.display(), error = %e, "waiting for a reader on the named pipe");
                            waiting_logged = true;
                        }
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                continue;
            };
            let d = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(d) => d,
                Err(RecvTimeoutError::Timeout) if stopping => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            buf.clear();
            let mut n: u64 = 0;
            if frame::encode(&mut buf, &d).is_ok() {
                n += 1;
            }
            // Batch whatever else is queued into one write.
            while buf.len() < 1 << 16 {
                match rx.try_recv() {
                    Some(d) => {
                        if frame::encode(&mut buf, &d).is_ok() {
                            n += 1;
                        }
                    }
                    None => break,
                }
            }
            match f.write_all(&buf) {
                Ok(()) => stats::add(&counters.pipe_frames, n),
                Err(e) => {
                    warn!(error = %e, lost = n, "named pipe reader went away; reconnecting");
                    stats::add(&counters.queue_drops, n);
                    out = None;
                }
            }
            debug!(bytes = buf.len(), "frames written");
        }
    })
}
