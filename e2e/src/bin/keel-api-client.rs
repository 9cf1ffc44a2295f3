//! A command-line client of keel-vmm's control socket, for tests that run
//! keel-vmm where they cannot link Rust code (inside the rig's L1):
//!
//! ```text
//! keel-api-client SOCKET wait                    wait (up to 60 s) until the socket answers
//! keel-api-client SOCKET COMMAND [TARGET_BYTES]  send one request, print the answer
//! keel-api-client SOCKET nic-link NIC up|down     connect or disconnect a NIC (net0, …)
//! keel-api-client SOCKET raw                     send stdin's lines as they are, print the answers
//! ```
//!
//! COMMAND is one of version, status, pause, resume, power-button, stop,
//! reset, counters, balloon-set (with the target in bytes),
//! balloon-stats and nic-link. The answer is printed as one JSON line: the `ok` value,
//! or `{"error":{...}}`. Exit status: 0 ok, 1 an error answer, 2 usage or
//! connection failure.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmm_api::{Client, ClientError, Request};

fn usage() -> ExitCode {
    eprintln!(
        "usage: keel-api-client SOCKET wait|raw|version|status|pause|resume|power-button|stop|reset|counters|balloon-stats\n       keel-api-client SOCKET balloon-set TARGET_BYTES\n       keel-api-client SOCKET nic-link NIC up|down"
    );
    ExitCode::from(2)
}

fn request(cmd: &str, arg: Option<&str>, arg2: Option<&str>) -> Option<Request> {
    if cmd == "nic-link" {
        let up = match arg2? {
            "up" => true,
            "down" => false,
            _ => return None,
        };
        return Some(Request::NicLink {
            nic: arg?.to_string(),
            up,
        });
    }
    if arg2.is_some() {
        return None;
    }
    Some(match (cmd, arg) {
        ("version", None) => Request::Version,
        ("status", None) => Request::Status,
        ("pause", None) => Request::Pause,
        ("resume", None) => Request::Resume,
        ("power-button", None) => Request::PowerButton,
        ("stop", None) => Request::Stop,
        ("reset", None) => Request::Reset,
        ("counters", None) => Request::Counters,
        ("balloon-stats", None) => Request::BalloonStats,
        ("balloon-set", Some(n)) => Request::BalloonSet {
            target_bytes: n.parse().ok()?,
        },
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(cmd)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let arg = args.get(2).map(String::as_str);
    if cmd == "wait" {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Client::connect(socket) {
                if c.call(Request::Version).is_ok() {
                    return ExitCode::SUCCESS;
                }
            }
            if Instant::now() > deadline {
                eprintln!("keel-api-client: {socket} did not answer within 60 s");
                return ExitCode::from(2);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keel-api-client: {e}");
            return ExitCode::from(2);
        }
    };
    if cmd == "raw" {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match client.call_raw(&line) {
                Ok(answer) => println!("{answer}"),
                Err(e) => {
                    eprintln!("keel-api-client: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    let arg2 = args.get(3).map(String::as_str);
    let Some(request) = request(cmd, arg, arg2) else {
        return usage();
    };
    match client.call(request) {
        Ok(reply) => {
            println!("{}", serde_json::to_string(&reply).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(ClientError::Api(e)) => {
            let wrapped = serde_json::json!({ "error": e });
            println!("{wrapped}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("keel-api-client: {e}");
            ExitCode::from(2)
        }
    }
}
