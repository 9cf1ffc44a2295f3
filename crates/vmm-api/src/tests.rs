use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use super::*;

fn ok(line: &str) -> Envelope {
    parse_request(line.as_bytes()).unwrap_or_else(|r| panic!("{line}: {:?}", r.error))
}

fn rejected(line: &[u8]) -> Rejection {
    match parse_request(line) {
        Ok(e) => panic!("{} was accepted as {e:?}", String::from_utf8_lossy(line)),
        Err(r) => r,
    }
}

#[test]
fn every_command_parses() {
    let cases = [
        (r#"{"v":1,"cmd":"version"}"#, Request::Version),
        (r#"{"v":1,"cmd":"status"}"#, Request::Status),
        (r#"{"v":1,"cmd":"pause"}"#, Request::Pause),
        (r#"{"v":1,"cmd":"resume"}"#, Request::Resume),
        (r#"{"v":1,"cmd":"power-button"}"#, Request::PowerButton),
        (r#"{"v":1,"cmd":"stop"}"#, Request::Stop),
        (r#"{"v":1,"cmd":"reset"}"#, Request::Reset),
        (
            r#"{"cmd":"balloon-set","v":1,"target_bytes":268435456}"#,
            Request::BalloonSet {
                target_bytes: 256 << 20,
            },
        ),
        (r#"{"v":1,"cmd":"balloon-stats"}"#, Request::BalloonStats),
        (r#"{"v":1,"cmd":"counters"}"#, Request::Counters),
        (
            r#"{"v":1,"cmd":"nic-link","nic":"net0","up":false}"#,
            Request::NicLink {
                nic: "net0".into(),
                up: false,
            },
        ),
    ];
    assert_eq!(cases.len(), COMMANDS.len());
    for (line, want) in cases {
        let e = ok(line);
        assert_eq!(e.request, want, "{line}");
        assert_eq!(e.id, None);
        assert!(COMMANDS.contains(&want.name()));
    }
    assert_eq!(ok(r#"{"v":1,"id":42,"cmd":"status"}"#).id, Some(42));
    assert_eq!(ok(r#"{"v":1,"id":null,"cmd":"status"}"#).id, None);
    // Whitespace and a \r are fine.
    assert_eq!(
        ok(" { \"cmd\" : \"stop\" , \"v\" : 1 } \r").request,
        Request::Stop
    );
}

#[test]
fn encoded_requests_parse_back() {
    for request in [
        Request::Status,
        Request::Reset,
        Request::BalloonSet {
            target_bytes: u64::MAX,
        },
    ] {
        let e = Envelope {
            id: Some(7),
            request,
        };
        let line = e.encode();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(ok(line.trim_end()), e);
    }
}

#[test]
fn garbage_lines_get_bad_json() {
    for line in [
        &b""[..],
        b"hello",
        b"{",
        b"{\"v\":1,\"cmd\":\"status\"",
        b"\xff\xfe\x00",
        b"{\"v\":1,\"cmd\":\"status\"} trailing",
        b"[1,2",
    ] {
        let r = rejected(line);
        assert_eq!(r.error.code, ErrorCode::BadJson, "{line:?}");
        assert_eq!(r.id, None);
    }
}

#[test]
fn non_objects_and_bad_fields_get_bad_request() {
    for (line, needle) in [
        ("[]", "JSON object"),
        ("42", "JSON object"),
        ("\"status\"", "JSON object"),
        ("null", "JSON object"),
        (r#"{"cmd":"status"}"#, "Missing field v"),
        (r#"{"v":1}"#, "Missing field cmd"),
        (r#"{"v":1,"cmd":7}"#, "cmd must be a string"),
        (r#"{"v":1,"id":-1,"cmd":"status"}"#, "id must be"),
        (r#"{"v":1,"id":"x","cmd":"status"}"#, "id must be"),
        (
            r#"{"v":1,"cmd":"status","force":true}"#,
            "Unknown field 'force'",
        ),
        (
            r#"{"v":1,"cmd":"reset","hard":true}"#,
            "Unknown field 'hard'",
        ),
        (r#"{"v":1,"cmd":"balloon-set"}"#, "target_bytes"),
        (
            r#"{"v":1,"cmd":"balloon-set","target_bytes":-5}"#,
            "balloon-set",
        ),
        (
            r#"{"v":1,"cmd":"balloon-set","target_bytes":"1G"}"#,
            "balloon-set",
        ),
        (
            r#"{"v":1,"cmd":"balloon-set","target_bytes":1.5}"#,
            "balloon-set",
        ),
        (
            r#"{"v":1,"cmd":"balloon-set","target_bytes":1,"extra":1}"#,
            "extra",
        ),
    ] {
        let r = rejected(line.as_bytes());
        assert_eq!(r.error.code, ErrorCode::BadRequest, "{line}: {:?}", r.error);
        assert!(
            r.error.message.contains(needle),
            "{line}: {}",
            r.error.message
        );
    }
    // The id survives when it was readable, so the answer can carry it.
    let r = rejected(br#"{"v":1,"id":9,"cmd":"status","x":1}"#);
    assert_eq!(r.id, Some(9));
}

#[test]
fn unknown_commands_and_versions_have_their_own_codes() {
    let r = rejected(br#"{"v":1,"id":3,"cmd":"reboot"}"#);
    assert_eq!(r.error.code, ErrorCode::UnknownCommand);
    assert_eq!(r.id, Some(3));
    assert!(r.error.message.contains("reboot") && r.error.message.contains("status"));
    for v in ["2", "0", "\"1\"", "1.0", "null"] {
        let line = format!(r#"{{"v":{v},"cmd":"status"}}"#);
        let r = rejected(line.as_bytes());
        assert_eq!(r.error.code, ErrorCode::UnsupportedVersion, "{line}");
    }
}

#[test]
fn oversize_lines_are_refused_before_parsing() {
    let mut line = br#"{"v":1,"cmd":"status","pad":""#.to_vec();
    line.extend(vec![b'a'; MAX_REQUEST_LINE]);
    line.extend_from_slice(b"\"}");
    assert_eq!(rejected(&line).error.code, ErrorCode::LineTooLong);
}

#[test]
fn deeply_nested_json_does_not_crash() {
    let mut line = vec![b'['; 4000];
    line.extend(vec![b']'; 4000]);
    assert_eq!(rejected(&line).error.code, ErrorCode::BadJson);
}

#[test]
fn responses_round_trip_and_look_as_documented() {
    let status = Reply::Status(VmStatus {
        state: VmState::ShuttingDown,
        vcpus: 2,
        memory_bytes: 1 << 30,
        uptime_ms: 5321,
        boots: 1,
        balloon: None,
    });
    let line = Response::new(Some(1), Ok(status.clone())).encode();
    assert_eq!(
        line,
        "{\"v\":1,\"id\":1,\"ok\":{\"status\":{\"state\":\"shutting-down\",\"vcpus\":2,\
         \"memory_bytes\":1073741824,\"uptime_ms\":5321,\"boots\":1,\"balloon\":null}}}\n"
    );
    let back: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(back.into_result(), Ok(status));
    assert_eq!(
        Response::new(None, Ok(Reply::Done)).encode(),
        "{\"v\":1,\"ok\":\"done\"}\n"
    );
    let err = Response::new(None, Err(ApiError::new(ErrorCode::NoDevice, "No balloon")));
    assert_eq!(
        err.encode(),
        "{\"v\":1,\"error\":{\"code\":\"no-device\",\"message\":\"No balloon\"}}\n"
    );
    let stats = Reply::BalloonStats(BalloonStats {
        age_ms: Some(3),
        free_bytes: Some(100),
        ..Default::default()
    });
    let line = Response::new(None, Ok(stats.clone())).encode();
    assert!(!line.contains("swap"), "absent stats are omitted: {line}");
    let back: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(back.into_result(), Ok(stats));
}

#[test]
fn counters_round_trip_and_look_as_documented() {
    let counters = Reply::Counters(VmCounters {
        disks: vec![DiskCounters {
            id: "disk0".into(),
            serial: Some("KEEL-1".into()),
            read_ops: 1,
            read_bytes: 512,
            write_ops: 2,
            write_bytes: 4096,
            flush_ops: 3,
            discard_ops: 4,
            write_zeroes_ops: 5,
            errors: 6,
        }],
        nics: vec![NicCounters {
            id: "net0".into(),
            mac: "02:6b:65:00:00:01".into(),
            tap: "keel0".into(),
            rx_packets: 7,
            rx_bytes: 700,
            tx_packets: 8,
            tx_bytes: 800,
            rx_dropped: 9,
            tx_errors: 10,
            tx_forged: 11,
            rx_filtered: 12,
            link_up: false,
        }],
    });
    let line = Response::new(Some(3), Ok(counters.clone())).encode();
    assert_eq!(
        line,
        "{\"v\":1,\"id\":3,\"ok\":{\"counters\":{\"disks\":[{\"id\":\"disk0\",\"serial\":\"KEEL-1\",\
         \"read_ops\":1,\"read_bytes\":512,\"write_ops\":2,\"write_bytes\":4096,\"flush_ops\":3,\
         \"discard_ops\":4,\"write_zeroes_ops\":5,\"errors\":6}],\"nics\":[{\"id\":\"net0\",\
         \"mac\":\"02:6b:65:00:00:01\",\"tap\":\"keel0\",\"rx_packets\":7,\"rx_bytes\":700,\
         \"tx_packets\":8,\"tx_bytes\":800,\"rx_dropped\":9,\"tx_errors\":10,\"tx_forged\":11,\
         \"rx_filtered\":12,\"link_up\":false}]}}}\n"
    );
    let back: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(back.into_result(), Ok(counters));
    // An older or newer server: missing counters read as 0, unknown ones
    // are ignored.
    let line = r#"{"v":1,"ok":{"counters":{"disks":[{"id":"disk1","read_bytes":5,"trim_ops":2}],"gpus":[]}}}"#;
    let r: Response = serde_json::from_str(line).unwrap();
    let Ok(Reply::Counters(c)) = r.into_result() else {
        panic!("not counters")
    };
    assert!(c.nics.is_empty());
    assert_eq!(
        c.disks,
        vec![DiskCounters {
            id: "disk1".into(),
            read_bytes: 5,
            ..Default::default()
        }]
    );
    // A NIC from an older server: its link is up.
    let line = r#"{"v":1,"ok":{"counters":{"nics":[{"id":"net0","mac":"02:6b:65:00:00:01"}]}}}"#;
    let r: Response = serde_json::from_str(line).unwrap();
    let Ok(Reply::Counters(c)) = r.into_result() else {
        panic!("not counters")
    };
    assert!(c.nics[0].link_up);
    assert_eq!(c.nics[0].tx_forged, 0);
    assert_eq!(c.nics[0].rx_filtered, 0);
    // nic-link needs both fields, with their types.
    for bad in [
        &br#"{"v":1,"cmd":"nic-link","nic":"net0"}"#[..],
        br#"{"v":1,"cmd":"nic-link","up":true}"#,
        br#"{"v":1,"cmd":"nic-link","nic":"net0","up":"no"}"#,
        br#"{"v":1,"cmd":"nic-link","nic":"net0","up":true,"mac":"x"}"#,
    ] {
        let r = rejected(bad);
        assert_eq!(r.error.code, ErrorCode::BadRequest, "{r:?}");
    }
    // The request takes no arguments.
    let r = rejected(br#"{"v":1,"cmd":"counters","disk":"disk0"}"#);
    assert_eq!(r.error.code, ErrorCode::BadRequest);
}

#[test]
fn clients_tolerate_what_newer_servers_add() {
    let line =
        r#"{"v":1,"id":4,"new":1,"error":{"code":"quota-exceeded","message":"m","hint":"h"}}"#;
    let r: Response = serde_json::from_str(line).unwrap();
    assert_eq!(r.into_result().unwrap_err().code, ErrorCode::Unknown);
    let line = r#"{"v":1,"ok":{"status":{"state":"migrating","vcpus":1,"memory_bytes":1,"uptime_ms":1,"boots":1,"balloon":null,"numa":[]}}}"#;
    let r: Response = serde_json::from_str(line).unwrap();
    match r.into_result().unwrap() {
        Reply::Status(s) => assert_eq!(s.state, VmState::Unknown),
        other => panic!("{other:?}"),
    }
    let both: Response =
        serde_json::from_str(r#"{"v":1,"ok":"done","error":{"code":"busy","message":"m"}}"#)
            .unwrap();
    assert_eq!(both.into_result().unwrap_err().code, ErrorCode::Internal);
}

fn socket_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vmm-api-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A one-connection server that answers each line with `answer(line)`.
fn serve(path: &PathBuf, answer: fn(&str) -> String) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut w = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let line = line.unwrap();
            w.write_all(answer(&line).as_bytes()).unwrap();
        }
    })
}

#[test]
fn client_calls_and_checks_ids() {
    let path = socket_path("client");
    let server = serve(&path, |line| {
        let e = parse_request(line.as_bytes()).unwrap();
        let result = match e.request {
            Request::Pause => Ok(Reply::Done),
            _ => Err(ApiError::new(ErrorCode::InvalidState, "no")),
        };
        Response::new(e.id, result).encode()
    });
    let mut c = Client::connect(&path).unwrap();
    c.set_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(c.call(Request::Pause).unwrap(), Reply::Done);
    let e = c.call(Request::Resume).unwrap_err();
    assert_eq!(e.api().unwrap().code, ErrorCode::InvalidState);
    let raw = c.call_raw(r#"{"v":1,"id":99,"cmd":"pause"}"#).unwrap();
    assert_eq!(raw, r#"{"v":1,"id":99,"ok":"done"}"#);
    drop(c);
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn client_refuses_mismatched_or_malformed_answers() {
    let path = socket_path("bad");
    let server = serve(&path, |line| {
        if line.contains("pause") {
            "{\"v\":1,\"id\":12345,\"ok\":\"done\"}\n".into()
        } else {
            "not json\n".into()
        }
    });
    let mut c = Client::connect(&path).unwrap();
    assert!(matches!(
        c.call(Request::Pause),
        Err(ClientError::BadResponse(_))
    ));
    assert!(matches!(
        c.call(Request::Status),
        Err(ClientError::BadResponse(_))
    ));
    drop(c);
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(matches!(
        Client::connect(&path),
        Err(ClientError::Connect { .. })
    ));
}

#[test]
fn a_client_can_start_from_a_connected_stream() {
    let path = socket_path("from-stream");
    let server = serve(&path, |line| {
        let e = parse_request(line.as_bytes()).unwrap();
        Response::new(e.id, Ok(Reply::Done)).encode()
    });
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut c = Client::from_stream(stream).unwrap();
    assert!(c.stream().peer_addr().is_ok());
    assert_eq!(c.call(Request::Reset).unwrap(), Reply::Done);
    drop(c);
    server.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
