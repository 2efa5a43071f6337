//! The collector: UDP in, stamped datagrams out, never parsing and never blocking for long.
//!
//! [`bind`] opens the socket (dual stack, large receive buffer). [`spawn_receiver`] reads it,
//! stamps each datagram with the exporter's address and the receive time, and hands it to a
//! bounded [`Queue`] (bounded in bytes as well as datagrams); when the queue is full the
//! datagram is dropped and counted. [`spawn_pipe_sender`] drains the queue into the named pipe,
//! waiting for a reader and reconnecting when it goes away; while no reader is attached the
//! queue fills and then drops.
//!
//! Losses the kernel causes are counted too: [`kernel_drops`] reads the `drops` column of
//! `/proc/self/net/udp` and `/proc/self/net/udp6` for the socket's inode (datagrams the kernel
//! discarded because the receive buffer was full), and the receiver publishes it as
//! `socket_drops`. The /proc table needs no unsafe code and no extra crate; `SO_RXQ_OVFL`
//! ancillary data would need `recvmsg` with a control buffer, which `std` does not offer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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

/// Average datagram size the slot count of [`queue_of_bytes`] is sized for: NetFlow datagrams
/// are 1–1.5 KB (a v5 packet of 30 records is 1,464 bytes), templates alone smaller.
pub const SLOT_BYTES: usize = 512;

/// A queue bounded by `max_bytes` of payload, with one slot per [`SLOT_BYTES`] of it (at
/// least 1,024, at most 2^20). The channel's slots (72 bytes each) are allocated and touched
/// up front, so a fixed 2^20 of them cost 72 MiB of resident memory even when idle.
pub fn queue_of_bytes(max_bytes: usize) -> (Queue, QueueRx) {
    queue((max_bytes / SLOT_BYTES).clamp(1024, 1 << 20), max_bytes)
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

/// The largest UDP payload, received whole.
const MAX_DATAGRAM: usize = 65_536;
/// Bytes of one receive block: 16 of the largest datagrams, hundreds of typical ones.
const RECV_BLOCK: usize = 1 << 20;

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
            // One block received into, datagram after datagram, each handed out as a slice
            // of it (`Bytes`): one allocation per block instead of one per datagram. A block
            // is freed when the last of its datagrams is.
            let mut block = bytes::BytesMut::new();
            let mut limit = RateLimit::new(Duration::from_secs(10));
            let mut drops = SocketDrops::new(&sock);
            while !stop.load(Ordering::Relaxed) {
                drops.poll(&counters);
                if block.len() < MAX_DATAGRAM {
                    block = bytes::BytesMut::zeroed(RECV_BLOCK);
                }
                let (n, from) = match sock.recv_from(&mut block[..MAX_DATAGRAM]) {
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
                    payload: block.split_to(n).freeze(),
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
            drops.read(&counters);
        })
}

/// The kernel's drop counter of one socket, read at most once a second.
struct SocketDrops {
    inode: Option<u64>,
    last: u64,
    next: Instant,
    limit: RateLimit,
}

impl SocketDrops {
    fn new(sock: &UdpSocket) -> SocketDrops {
        let inode = match socket_inode(sock) {
            Ok(i) => Some(i),
            Err(e) => {
                warn!(error = %e, "cannot identify the socket: kernel drops will not be reported");
                None
            }
        };
        SocketDrops {
            inode,
            last: 0,
            next: Instant::now(),
            limit: RateLimit::new(Duration::from_secs(10)),
        }
    }

    fn poll(&mut self, counters: &Counters) {
        if Instant::now() >= self.next {
            self.next = Instant::now() + Duration::from_secs(1);
            self.read(counters);
        }
    }

    fn read(&mut self, counters: &Counters) {
        let Some(n) = self.inode.and_then(kernel_drops) else {
            return;
        };
        if n > self.last {
            counters.socket_drops.store(n, Ordering::Relaxed);
            if let Some(suppressed) = self.limit.allow() {
                warn!(
                    new = n - self.last,
                    total = n,
                    suppressed,
                    "the kernel dropped datagrams: socket receive buffer full (raise RECEIVE_BUFFER and net.core.rmem_max)"
                );
            }
            self.last = n;
        }
    }
}

/// The inode number of a socket, which names it in `/proc/net/udp`.
pub fn socket_inode(sock: &UdpSocket) -> io::Result<u64> {
    Ok(rustix::fs::fstat(sock).map_err(io::Error::from)?.st_ino)
}

/// Datagrams the kernel dropped for the UDP socket with this inode (receive buffer full,
/// and a few rarer causes such as checksum errors), from `/proc/self/net/udp` or `udp6`.
/// `None` when the socket is not listed (closed) or /proc is not mounted.
pub fn kernel_drops(inode: u64) -> Option<u64> {
    ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .find_map(|p| parse_proc_udp_drops(&std::fs::read_to_string(p).ok()?, inode))
}

/// The `drops` column of the row for `inode` in a `/proc/net/udp` table (columns: sl,
/// local_address, rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout,
/// inode, ref, pointer, drops).
pub fn parse_proc_udp_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let ino: u64 = cols.get(9)?.parse().ok()?;
        if ino != inode {
            return None;
        }
        cols.get(12)?.parse().ok()
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

/// Writes `buf` to the pipe. While no reader is attached (the writer is restarting) it keeps
/// the pipe open and retries: the kernel keeps the bytes already in the pipe buffer as long as
/// one end stays open, and hands them to the next reader, so a writer restart loses nothing
/// here. Gives up, returning the bytes written, when stopping, on another error, or when the
/// path now names a different pipe (recreated: the new reader never sees this one).
fn write_frames(f: &mut File, path: &Path, buf: &[u8], stop: &AtomicBool) -> Result<(), usize> {
    let mut off = 0;
    let mut waiting = false;
    while off < buf.len() {
        match f.write(&buf[off..]) {
            Ok(0) => return Err(off),
            Ok(n) => {
                off += n;
                if waiting {
                    info!(path = %path.display(), "named pipe reader back");
                    waiting = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                if stop.load(Ordering::Relaxed) || !same_file(f, path) {
                    return Err(off);
                }
                if !waiting {
                    info!(path = %path.display(), "named pipe reader gone; keeping the pipe open and waiting for the next one");
                    waiting = true;
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                warn!(error = %e, "writing the named pipe failed");
                return Err(off);
            }
        }
    }
    Ok(())
}

fn same_file(f: &File, path: &Path) -> bool {
    match (rustix::fs::fstat(f), rustix::fs::stat(path)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
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
        let mut ends: Vec<usize> = Vec::new();
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
            ends.clear();
            if frame::encode(&mut buf, &d).is_ok() {
                ends.push(buf.len());
            }
            // Batch whatever else is queued into one write.
            while buf.len() < 1 << 16 {
                match rx.try_recv() {
                    Some(d) => {
                        if frame::encode(&mut buf, &d).is_ok() {
                            ends.push(buf.len());
                        }
                    }
                    None => break,
                }
            }
            match write_frames(f, &path, &buf, &stop) {
                Ok(()) => stats::add(&counters.pipe_frames, ends.len() as u64),
                Err(written) => {
                    // Frames wholly written are in the pipe; the rest (a cut one included) is lost.
                    let done = ends.iter().filter(|&&e| e <= written).count();
                    let lost = (ends.len() - done) as u64;
                    stats::add(&counters.pipe_frames, done as u64);
                    stats::add(&counters.queue_drops, lost);
                    warn!(lost, "named pipe unusable; reopening it");
                    out = None;
                }
            }
            debug!(bytes = buf.len(), "frames written");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  \
        123: 0100007F:0807 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n  \
        124: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n";

    #[test]
    fn test_parse_proc_udp_drops() {
        assert_eq!(parse_proc_udp_drops(TABLE, 4242), Some(17));
        assert_eq!(parse_proc_udp_drops(TABLE, 99), Some(0));
        assert_eq!(parse_proc_udp_drops(TABLE, 5), None);
        assert_eq!(parse_proc_udp_drops("", 5), None);
        assert_eq!(parse_proc_udp_drops("header\n1: x y z\n\n", 1), None);
    }

    /// A socket with a tiny receive buffer that nobody reads: the kernel drops, the drop count
    /// is read back from /proc, and the receiver publishes it as `socket_drops`.
    #[test]
    fn test_kernel_socket_drops_are_reported() {
        // Dual stack (listed in /proc/net/udp6) like the default, when IPv6 is available.
        let (sock, _) = bind("[::]:0".parse().expect("addr"), 4096)
            .or_else(|_| bind("127.0.0.1:0".parse().expect("addr"), 4096))
            .expect("bind");
        let port = sock.local_addr().expect("local").port();
        let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
        for _ in 0..2000 {
            let _ = tx.send_to(&[7u8; 1000], ("127.0.0.1", port));
        }
        let inode = socket_inode(&sock).expect("inode");
        let drops = kernel_drops(inode).expect("socket listed in /proc/self/net/udp*");
        assert!(drops > 0, "the kernel dropped nothing");

        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (q, _rx) = queue(10_000, 64 << 20);
        let h = spawn_receiver(sock, q, Arc::clone(&counters), Arc::clone(&stop)).expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while counters.socket_drops.load(Ordering::Relaxed) < drops
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        h.join().expect("join");
        assert_eq!(counters.socket_drops.load(Ordering::Relaxed), drops);
        assert!(counters.line().contains(&format!("socket_drops={drops}")));
        assert!(
            counters
                .prometheus()
                .contains(&format!("netflow_socket_drops {drops}\n"))
        );
    }
}
