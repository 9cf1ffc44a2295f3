//! A small Unix-stream tool for tests that run beside keel-vmm where they
//! cannot link Rust code (inside the rig's L1): the host side of console
//! ports and vsock.
//!
//! ```text
//! keel-sock connect|listen PATH [--send TEXT] [--send-file FILE] [--shut]
//!                               [--lines N] [--timeout SECS]
//! ```
//!
//! `connect` retries until PATH accepts; `listen` binds PATH and takes one
//! client. Then TEXT is written (`\n` in it is a newline), then FILE's
//! bytes, then with `--shut` the sending side is closed; what arrives is
//! copied to stdout until N lines came (exit 0), the peer closes (exit 0
//! without --lines, else 1) or the timeout passes (default 60 s; exit 1).
//! Usage and socket errors: exit 2.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!("usage: keel-sock connect|listen PATH [--send TEXT] [--lines N] [--timeout SECS]");
    ExitCode::from(2)
}

struct Opts {
    mode: String,
    path: String,
    send: Vec<u8>,
    send_file: Option<String>,
    shut: bool,
    lines: Option<usize>,
    timeout: Duration,
}

fn parse() -> Option<Opts> {
    let mut args = std::env::args().skip(1);
    let mode = args.next()?;
    let path = args.next()?;
    if mode != "connect" && mode != "listen" {
        return None;
    }
    let mut o = Opts {
        mode,
        path,
        send: Vec::new(),
        send_file: None,
        shut: false,
        lines: None,
        timeout: Duration::from_secs(60),
    };
    while let Some(flag) = args.next() {
        if flag == "--shut" {
            o.shut = true;
            continue;
        }
        let value = args.next()?;
        match flag.as_str() {
            "--send" => o.send = value.replace("\\n", "\n").into_bytes(),
            "--send-file" => o.send_file = Some(value),
            "--lines" => o.lines = Some(value.parse().ok()?),
            "--timeout" => o.timeout = Duration::from_secs(value.parse().ok()?),
            _ => return None,
        }
    }
    Some(o)
}

fn main() -> ExitCode {
    let Some(o) = parse() else {
        return usage();
    };
    let deadline = Instant::now() + o.timeout;
    let stream = if o.mode == "connect" {
        loop {
            match UnixStream::connect(&o.path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("keel-sock: cannot connect to {}: {e}", o.path);
                    return ExitCode::from(2);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    } else {
        let _ = std::fs::remove_file(&o.path);
        let listener = match UnixListener::bind(&o.path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("keel-sock: cannot listen on {}: {e}", o.path);
                return ExitCode::from(2);
            }
        };
        if listener.set_nonblocking(true).is_err() {
            return ExitCode::from(2);
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    eprintln!("keel-sock: no client on {}: {e}", o.path);
                    return ExitCode::from(1);
                }
            }
        }
    };
    let mut stream = stream;
    if stream.set_nonblocking(false).is_err() {
        return ExitCode::from(2);
    }
    if let Err(e) = stream.write_all(&o.send) {
        eprintln!("keel-sock: write failed: {e}");
        return ExitCode::from(1);
    }
    if let Some(file) = &o.send_file {
        let copied = std::fs::File::open(file).and_then(|mut f| std::io::copy(&mut f, &mut stream));
        if let Err(e) = copied {
            eprintln!("keel-sock: sending {file} failed: {e}");
            return ExitCode::from(1);
        }
    }
    if o.shut {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut out = std::io::stdout();
    let mut lines = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        if o.lines.is_some_and(|n| lines >= n) {
            return ExitCode::SUCCESS;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            eprintln!("keel-sock: timed out after {lines} lines");
            return ExitCode::from(1);
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return if o.lines.is_some() {
                    eprintln!("keel-sock: closed after {lines} lines");
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            Ok(n) => {
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                eprintln!("keel-sock: timed out after {lines} lines");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("keel-sock: read failed: {e}");
                return ExitCode::from(1);
            }
        }
    }
}
