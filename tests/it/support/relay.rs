//! A loopback TCP relay that counts every byte in each direction: an honest measure of what a
//! client puts on the wire, whatever the protocol does inside. For fault injection it can also
//! cut each connection after a given number of bytes ([`Relay::cut_after`]).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counters {
    /// Client → server.
    up: AtomicU64,
    /// Server → client.
    down: AtomicU64,
    /// Connections still open.
    open: AtomicU64,
    stop: AtomicBool,
    /// Byte budget (both directions together) given to each new connection; `None`: no cut.
    cut_after: Mutex<Option<u64>>,
    /// How many new connections still pass uncut before `cut_after` applies.
    spared: AtomicU64,
    /// Connections cut because they used up their budget.
    cuts: AtomicU64,
    /// When each connection was accepted.
    accepted: Mutex<Vec<Instant>>,
    /// Server → client, one byte per this interval (a server that trickles); `None`: full speed.
    trickle: Mutex<Option<Duration>>,
}

/// Bytes seen on the wire since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wire {
    pub up: u64,
    pub down: u64,
}

impl Wire {
    pub fn total(&self) -> u64 {
        self.up + self.down
    }
}

pub struct Relay {
    pub port: u16,
    counters: Arc<Counters>,
}

impl Relay {
    /// Listens on a free loopback port and forwards every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Relay {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the relay");
        let port = listener.local_addr().expect("relay address").port();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if c.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let Ok(mut a) = c.accepted.lock() {
                    a.push(Instant::now());
                }
                let spared = c
                    .spared
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let budget = match c.cut_after.lock() {
                    Ok(b) if !spared => b.unwrap_or(u64::MAX),
                    _ => u64::MAX,
                };
                let budget = Arc::new(AtomicU64::new(budget));
                c.open.fetch_add(2, Ordering::SeqCst);
                pump(&client, &server, c.clone(), budget.clone(), true);
                pump(&server, &client, c.clone(), budget, false);
            }
        });
        Relay { port, counters }
    }

    /// Zeroes the counters (call between measurements, with no connection open).
    pub fn reset(&self) {
        self.counters.up.store(0, Ordering::SeqCst);
        self.counters.down.store(0, Ordering::SeqCst);
    }

    /// Waits (up to 10 s) until every relayed connection is closed, then returns the counts.
    pub fn settle(&self) -> Wire {
        let start = Instant::now();
        while self.counters.open.load(Ordering::SeqCst) > 0
            && start.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(5));
        }
        self.wire()
    }

    /// Every connection accepted from now on is cut (both sockets shut down, as when a link
    /// drops) once `bytes` have passed through it in either direction; `None` stops cutting.
    pub fn cut_after(&self, bytes: Option<u64>) {
        self.cut_after_sparing(0, bytes);
    }

    /// Like [`Relay::cut_after`], but the next `spared` connections pass uncut.
    pub fn cut_after_sparing(&self, spared: u64, bytes: Option<u64>) {
        if let Ok(mut b) = self.counters.cut_after.lock() {
            *b = bytes;
        }
        self.counters.spared.store(spared, Ordering::SeqCst);
    }

    /// From now on (open connections too), the server's bytes reach the client one per
    /// `interval`, as from a server that trickles on purpose; `None` lets them through again.
    pub fn trickle(&self, interval: Option<Duration>) {
        if let Ok(mut t) = self.counters.trickle.lock() {
            *t = interval;
        }
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> u64 {
        self.counters.cuts.load(Ordering::SeqCst)
    }

    /// When each connection so far was accepted, in order.
    pub fn accepted(&self) -> Vec<Instant> {
        self.counters
            .accepted
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    pub fn wire(&self) -> Wire {
        Wire {
            up: self.counters.up.load(Ordering::SeqCst),
            down: self.counters.down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, counting, until either side closes or the connection's `budget` (shared
/// by both directions) runs out; then both sockets are shut down.
fn pump(
    from: &TcpStream,
    to: &TcpStream,
    c: Arc<Counters>,
    budget: Arc<AtomicU64>,
    upstream: bool,
) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        c.open.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    Some(b.saturating_sub(n as u64))
                })
                .unwrap_or(0);
            let allowed = (before.min(n as u64)) as usize;
            if send(&mut to, &buf[..allowed], &c, upstream).is_err() {
                break;
            }
            let counter = if upstream { &c.up } else { &c.down };
            counter.fetch_add(allowed as u64, Ordering::SeqCst);
            if allowed < n {
                // The link drops: neither side gets another byte.
                c.cuts.fetch_add(1, Ordering::SeqCst);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
        c.open.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Writes `data`, a byte at a time while the relay trickles the server's bytes.
fn send(to: &mut TcpStream, data: &[u8], c: &Counters, upstream: bool) -> std::io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let interval = match c.trickle.lock() {
            Ok(t) if !upstream => *t,
            _ => None,
        };
        let Some(interval) = interval else {
            return to.write_all(rest);
        };
        to.write_all(&rest[..1])?;
        rest = &rest[1..];
        thread::sleep(interval);
    }
    Ok(())
}
