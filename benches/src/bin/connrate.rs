//! TCP connections per second through a path: each connection is a
//! connect, the server's close (read until end of stream) and the client's
//! close, so the server side closes first and holds the `TIME_WAIT`, as a
//! web server does, and the client's ports come back at once.
//!
//!   connrate server ADDR:PORT
//!   connrate client ADDR:PORT THREADS SECONDS
//!
//! The server accepts and closes at once, on two threads sharing the
//! listener, until killed; it prints `ready` once it listens. The client
//! runs `THREADS` threads connecting in a loop for `SECONDS` and prints
//! `<completed per second> <failed>`: a failed connect (refused, reset, or
//! no answer within 2 s) is counted, never retried, so a path that drops
//! connections shows it instead of hiding it in the rate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, addr] if mode == "server" => parse_addr(addr).and_then(server),
        [mode, addr, threads, secs] if mode == "client" => parse_addr(addr).and_then(|addr| {
            let threads = threads
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| invalid("THREADS must be a positive number"))?;
            let secs = secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| invalid("SECONDS must be a positive number"))?;
            client(addr, threads, Duration::from_secs_f64(secs))
        }),
        _ => {
            eprintln!(
                "usage: connrate server ADDR:PORT | connrate client ADDR:PORT THREADS SECONDS"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn parse_addr(s: &str) -> io::Result<SocketAddr> {
    s.parse()
        .map_err(|_| invalid("ADDR:PORT must be an address and a port, e.g. 10.0.0.2:8080"))
}

fn server(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("ready");
    io::stdout().flush()?;
    let second = listener.try_clone()?;
    let other = std::thread::spawn(move || accept_loop(&second));
    accept_loop(&listener);
    let _ = other.join();
    Ok(())
}

/// Accepts and drops; a failed accept (a reset before it, `EMFILE`) is
/// passed over.
fn accept_loop(listener: &TcpListener) {
    loop {
        if let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    }
}

fn client(addr: SocketAddr, threads: usize, secs: Duration) -> io::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + secs;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut buf = [0_u8; 64];
                while Instant::now() < deadline {
                    if one(addr, &mut buf) {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| io::Error::other("a client thread panicked"))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = done.load(Ordering::Relaxed) as f64 / elapsed;
    println!("{rate:.0} {}", failed.load(Ordering::Relaxed));
    Ok(())
}

/// One connection: connect, wait for the server's close, close.
fn one(addr: SocketAddr, buf: &mut [u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(CONNECT_TIMEOUT)).is_err() {
        return false;
    }
    loop {
        match stream.read(buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
