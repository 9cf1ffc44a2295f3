//! The control socket server against a fake control loop (no KVM).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver};

use vmm_api::{Client, ClientError};

use super::*;

fn socket_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("keel-api-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Answers Api events like a control loop would: pause → done, anything
/// else → invalid-state naming the command. `stop` is answered after
/// `delay`.
fn fake_loop(rx: Receiver<Event>, delay: Duration) -> JoinHandle<usize> {
    thread::spawn(move || {
        let mut served = 0;
        while let Ok(ev) = rx.recv() {
            let Event::Api(call) = ev else { continue };
            served += 1;
            let result = match call.request {
                Request::Pause => Ok(Reply::Done),
                Request::Stop => {
                    thread::sleep(delay);
                    Ok(Reply::Done)
                }
                ref r => Err(ApiError::new(ErrorCode::InvalidState, r.name())),
            };
            call.answer(result);
        }
        served
    })
}

fn start(name: &str) -> (ApiServer, PathBuf, JoinHandle<usize>) {
    let path = socket_path(name);
    let (tx, rx) = mpsc::channel();
    let server = ApiServer::start(&path, tx, IoCounters::default()).unwrap();
    (server, path, fake_loop(rx, Duration::from_millis(300)))
}

fn raw(path: &Path) -> (BufReader<UnixStream>, UnixStream) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn exchange(r: &mut BufReader<UnixStream>, w: &mut UnixStream, line: &[u8]) -> Response {
    w.write_all(line).unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn requests_reach_the_control_loop_and_answers_come_back() {
    let (server, path, fake) = start("basic");
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.call(Request::Pause).unwrap(), Reply::Done);
    let e = c.call(Request::Status).unwrap_err();
    assert_eq!(e.api().unwrap().code, ErrorCode::InvalidState);
    // version is answered without the control loop.
    match c.call(Request::Version).unwrap() {
        Reply::Version(v) => {
            assert_eq!(v.protocol, PROTOCOL_VERSION);
            assert!(v.vmm.starts_with("keel-vmm "));
            assert!(v.commands.iter().any(|c| c == "balloon-set"));
        }
        other => panic!("{other:?}"),
    }
    drop(c);
    drop(server);
    assert_eq!(fake.join().unwrap(), 2);
    assert!(!path.exists(), "socket file removed");
}

#[test]
fn bad_lines_get_error_answers_and_the_connection_stays_usable() {
    let (_server, path, _fake) = start("garbage");
    let (mut r, mut w) = raw(&path);
    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        (b"hello\n".to_vec(), ErrorCode::BadJson),
        (b"\xff\xfe\x00\x01\n".to_vec(), ErrorCode::BadJson),
        (b"[]\n".to_vec(), ErrorCode::BadRequest),
        (
            b"{\"v\":1,\"cmd\":\"reboot\"}\n".to_vec(),
            ErrorCode::UnknownCommand,
        ),
        (
            b"{\"v\":2,\"cmd\":\"pause\"}\n".to_vec(),
            ErrorCode::UnsupportedVersion,
        ),
        (
            b"{\"v\":1,\"cmd\":\"pause\",\"now\":true}\n".to_vec(),
            ErrorCode::BadRequest,
        ),
        (
            [vec![b'x'; MAX_REQUEST_LINE + 1], b"\n".to_vec()].concat(),
            ErrorCode::LineTooLong,
        ),
    ];
    for (line, code) in cases {
        let resp = exchange(&mut r, &mut w, &line);
        assert_eq!(resp.v, PROTOCOL_VERSION);
        assert_eq!(resp.into_result().unwrap_err().code, code);
    }
    // Blank lines get no answer; the next request does, with its id.
    let resp = exchange(
        &mut r,
        &mut w,
        b"\n  \r\n{\"v\":1,\"id\":5,\"cmd\":\"pause\"}\n",
    );
    assert_eq!(resp.id, Some(5));
    assert_eq!(resp.into_result(), Ok(Reply::Done));
    // A huge line without a newline, then the peer half-closes: the server
    // answers line-too-long once and hangs up.
    w.write_all(&vec![b'{'; 3 * MAX_REQUEST_LINE]).unwrap();
    w.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.lines().count(), 1, "{rest}");
    assert!(rest.contains("line-too-long"), "{rest}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_server, path, _fake) = start("pipeline");
    let (mut r, mut w) = raw(&path);
    let mut batch = String::new();
    for id in 0..20 {
        batch.push_str(&format!("{{\"v\":1,\"id\":{id},\"cmd\":\"pause\"}}\n"));
    }
    w.write_all(batch.as_bytes()).unwrap();
    for id in 0..20 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(resp.id, Some(id));
    }
}

#[test]
fn clients_beyond_the_limit_are_told_busy() {
    let (_server, path, _fake) = start("limit");
    let mut held = Vec::new();
    for _ in 0..MAX_CLIENTS {
        let mut c = Client::connect(&path).unwrap();
        c.call(Request::Pause).unwrap();
        held.push(c);
    }
    let (mut r, _w) = raw(&path);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"busy\""), "{line}");
    // One leaves; a new client gets in.
    held.pop();
    let start = Instant::now();
    loop {
        let mut c = Client::connect(&path).unwrap();
        if c.call(Request::Pause).is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never let in");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_answer_to_stop_is_written_before_the_server_goes() {
    let (server, path, _fake) = start("stop");
    let mut c = Client::connect(&path).unwrap();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = thread::spawn(move || c.call(Request::Stop));
    // The fake loop answers stop after 300 ms; drop the server meanwhile,
    // as `run` does when the control loop has returned.
    thread::sleep(Duration::from_millis(50));
    drop(server);
    assert_eq!(caller.join().unwrap().unwrap(), Reply::Done);
    // Then connections are refused.
    assert!(matches!(
        Client::connect(&path),
        Err(ClientError::Connect { .. })
    ));
}

#[test]
fn requests_after_the_control_loop_is_gone_get_busy() {
    let path = socket_path("gone");
    let (tx, rx) = mpsc::channel();
    let _server = ApiServer::start(&path, tx, IoCounters::default()).unwrap();
    drop(rx);
    let mut c = Client::connect(&path).unwrap();
    let e = c.call(Request::Status).unwrap_err();
    assert_eq!(e.api().unwrap().code, ErrorCode::Busy);
}

#[test]
fn socket_paths_are_checked() {
    // Mode 0600.
    let (server, path, _fake) = start("mode");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A live socket is not taken over.
    let (tx, _rx) = mpsc::channel();
    let e = ApiServer::start(&path, tx.clone(), IoCounters::default())
        .err()
        .unwrap();
    assert!(matches!(e, ApiServerError::InUse(_)), "{e}");
    assert!(e.is_bad_input());
    drop(server);
    // A stale one (nobody listening) is replaced.
    let stale = socket_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let s = ApiServer::start(&stale, tx.clone(), IoCounters::default()).unwrap();
    assert!(UnixStream::connect(&stale).is_ok());
    drop(s);
    // A regular file is never removed.
    let file = socket_path("file");
    std::fs::write(&file, b"keep").unwrap();
    let e = ApiServer::start(&file, tx.clone(), IoCounters::default())
        .err()
        .unwrap();
    assert!(matches!(e, ApiServerError::NotASocket(_)), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let _ = std::fs::remove_file(&file);
    // A directory that does not exist.
    let e = ApiServer::start(
        Path::new("/nonexistent-keel/api.sock"),
        tx,
        IoCounters::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, ApiServerError::Bind { .. }), "{e}");
    assert!(e.is_bad_input());
}

#[test]
fn counters_are_answered_by_the_connection_from_live_counters() {
    use std::sync::atomic::Ordering;

    use crate::device_manager::DiskSource;

    let stats = Arc::new(virtio::block::BlockStats::default());
    let counters = IoCounters {
        disks: vec![DiskSource {
            id: "disk0".into(),
            serial: Some("KEEL-1".into()),
            stats: stats.clone(),
        }],
        nics: Vec::new(),
    };
    let path = socket_path("counters");
    let (tx, rx) = mpsc::channel();
    let _server = ApiServer::start(&path, tx, counters).unwrap();
    // No control loop at all: counters still answer, others do not.
    drop(rx);
    let mut c = Client::connect(&path).unwrap();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let read = |c: &mut Client| match c.call(Request::Counters).unwrap() {
        Reply::Counters(v) => v,
        other => panic!("{other:?}"),
    };
    let first = read(&mut c);
    assert!(first.nics.is_empty());
    assert_eq!(first.disks.len(), 1);
    assert_eq!(first.disks[0].id, "disk0");
    assert_eq!(first.disks[0].serial.as_deref(), Some("KEEL-1"));
    assert_eq!(first.disks[0].read_bytes, 0);
    stats.read_ops.fetch_add(2, Ordering::Relaxed);
    stats.read_bytes.fetch_add(8192, Ordering::Relaxed);
    let d = &read(&mut c).disks[0];
    assert_eq!((d.read_ops, d.read_bytes), (2, 8192));
    assert_eq!(
        c.call(Request::Status).unwrap_err().api().unwrap().code,
        ErrorCode::Busy
    );
    // The raw form, as documented.
    let line = c.call_raw(r#"{"v":1,"id":9,"cmd":"counters"}"#).unwrap();
    assert!(
        line.starts_with(r#"{"v":1,"id":9,"ok":{"counters":{"disks":[{"id":"disk0","serial":"KEEL-1","read_ops":2,"read_bytes":8192,"#),
        "{line}"
    );
    match c.call(Request::Version).unwrap() {
        Reply::Version(v) => assert!(v.commands.iter().any(|c| c == "counters")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nic_link_is_answered_by_the_connection_and_shows_in_counters() {
    use crate::device_manager::NicSource;
    use virtio::net::NetLink;

    let link = NetLink::default();
    let counters = IoCounters {
        disks: Vec::new(),
        nics: vec![NicSource {
            id: "net0".into(),
            mac: "02:6b:65:00:00:01".into(),
            stats: Arc::default(),
            tap: None,
            tap_drops_at_open: 0,
            link: link.clone(),
        }],
    };
    let path = socket_path("nic-link");
    let (tx, rx) = mpsc::channel();
    let _server = ApiServer::start(&path, tx, counters).unwrap();
    drop(rx);
    let mut c = Client::connect(&path).unwrap();
    c.set_timeout(Some(Duration::from_secs(10))).unwrap();
    let link_up = |c: &mut Client| match c.call(Request::Counters).unwrap() {
        Reply::Counters(v) => v.nics[0].link_up,
        other => panic!("{other:?}"),
    };
    assert!(link_up(&mut c));
    let down = Request::NicLink {
        nic: "net0".into(),
        up: false,
    };
    assert_eq!(c.call(down.clone()).unwrap(), Reply::Done);
    assert!(!link.is_up());
    assert!(!link_up(&mut c));
    // Again: still done, nothing changes.
    assert_eq!(c.call(down).unwrap(), Reply::Done);
    let line = c
        .call_raw(r#"{"v":1,"id":4,"cmd":"nic-link","nic":"net0","up":true}"#)
        .unwrap();
    assert_eq!(line, r#"{"v":1,"id":4,"ok":"done"}"#);
    assert!(link.is_up());
    let e = c
        .call(Request::NicLink {
            nic: "net7".into(),
            up: true,
        })
        .unwrap_err();
    let e = e.api().unwrap();
    assert_eq!(e.code, ErrorCode::NoDevice);
    assert!(e.message.contains("'net7' (it has net0)"), "{}", e.message);
}
