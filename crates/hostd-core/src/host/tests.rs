use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;

use hostd_api::{Privilege, Role, UserCreate};

use super::testutil::*;
use super::*;
use crate::auth::{RATE_MAX_PER_USER, SESSION_TTL_MS};
use crate::fsutil::TestDir;
use crate::ErrorKind;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn first_open_creates_everything_and_reopen_keeps_it() {
    let dir = TestDir::new("host-open");
    let mut opts = options(dir.path());
    opts.admin_password = None;
    let (opened, _) = open_fake(opts.clone()).unwrap();
    assert!(opened.first_start);
    let file = opened.admin_password_file.clone().unwrap();
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let password = fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 20);
    let host = opened.host;
    let state = host.state_dir().to_path_buf();
    assert!(state.join("inventory.db").exists());
    assert!(state.join("datastores/datastore1").is_dir());
    assert!(state.join("run").is_dir());
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let session = host.login("admin", &password, PEER).unwrap();
    assert_eq!(session.host_privileges.len(), 8);
    let admin = host.authenticate(&session.token).unwrap();
    assert_eq!(admin.user, "admin");
    let ds = host.datastore_list(&admin).unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].name, "datastore1");

    // A second keeld on the same directory is refused while the first runs.
    let err = open_fake(opts.clone()).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
    drop(host);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (again, _) = open_fake(opts).unwrap();
    assert!(!again.first_start);
    assert!(again.admin_password_file.is_none());
    again.host.login("admin", &password, PEER).unwrap();
}

#[test]
fn a_weak_admin_password_is_refused() {
    let dir = TestDir::new("host-open");
    let mut opts = options(dir.path());
    opts.admin_password = Some("short".into());
    let err = open_fake(opts).err().unwrap();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.starts_with("Admin password"), "{err}");
}

#[test]
fn logins_fail_are_audited_and_rate_limited() {
    let t = test_host("host-login");
    assert!(t.opened_first && t.password_file.is_none());
    let err = t.host.login("admin", "wrong-password", PEER).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    let err = t.host.login("ghost", "whatever-pw", PEER).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert_eq!(
        t.host.login("bad/name", "x", PEER).unwrap_err().kind,
        ErrorKind::Unauthorized
    );
    t.host.login("admin", ADMIN_PASSWORD, PEER).unwrap();
    let kinds = t.event_kinds();
    assert_eq!(
        kinds.iter().filter(|k| *k == "user.login-failed").count(),
        3
    );
    assert!(kinds.contains(&"user.login".to_string()));

    for _ in 0..RATE_MAX_PER_USER {
        let _ = t.host.login("admin", "wrong-password", PEER);
    }
    // Locked out, even with the right password.
    let err = t.host.login("admin", ADMIN_PASSWORD, PEER).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited, "{err}");
    assert_eq!(
        t.host
            .authenticate_password("admin", ADMIN_PASSWORD, PEER)
            .unwrap_err()
            .kind,
        ErrorKind::RateLimited
    );
    t.host.advance_clock(crate::auth::RATE_LOCKOUT_MS + 1);
    t.host.login("admin", ADMIN_PASSWORD, PEER).unwrap();
}

#[test]
fn sessions_expire_and_logout_ends_them() {
    let t = test_host("host-session");
    let s = t.host.login("admin", ADMIN_PASSWORD, PEER).unwrap();
    assert!(s.expires_ms > t.host.now());
    t.host.authenticate(&s.token).unwrap();
    t.host.advance_clock(SESSION_TTL_MS + 1000);
    let err = t.host.authenticate(&s.token).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    let s2 = t.host.login("admin", ADMIN_PASSWORD, PEER).unwrap();
    t.host.logout(&s2.token);
    assert!(t.host.authenticate(&s2.token).is_err());
    assert!(t.host.authenticate("garbage").is_err());
}

#[test]
fn basic_auth_checks_and_caches() {
    let t = test_host("host-basic");
    let c = t
        .host
        .authenticate_password("admin", ADMIN_PASSWORD, PEER)
        .unwrap();
    assert_eq!(c.user, "admin");
    // Cached: still right; a wrong password is still wrong.
    t.host
        .authenticate_password("admin", ADMIN_PASSWORD, PEER)
        .unwrap();
    assert!(t
        .host
        .authenticate_password("admin", "nope-nope", PEER)
        .is_err());
    // A changed password ends the cached one.
    t.host
        .user_set_password(&t.admin, "admin", "new-password-2")
        .unwrap();
    assert!(t
        .host
        .authenticate_password("admin", ADMIN_PASSWORD, PEER)
        .is_err());
    t.host
        .authenticate_password("admin", "new-password-2", PEER)
        .unwrap();
}

#[test]
fn users_and_permissions_need_the_privilege() {
    let t = test_host("host-users");
    let op = t.user("olga", Some(Role::Operator));
    let nobody = t.user("nick", None);
    assert_eq!(
        t.host.session_info(&op).unwrap(),
        [
            Privilege::SystemView,
            Privilege::VmPower,
            Privilege::VmConsole,
            Privilege::DatastoreBrowse
        ]
    );
    assert!(t.host.session_info(&nobody).unwrap().is_empty());
    let err = t.host.user_list(&op).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert!(
        err.message.contains("Authorization.ModifyPermissions"),
        "{err}"
    );
    let err = t
        .host
        .user_create(
            &op,
            UserCreate {
                name: "x".into(),
                password: "password-x".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    let users: Vec<_> = t
        .host
        .user_list(&t.admin)
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(users, ["admin", "nick", "olga"]);
    // Duplicates, bad names, weak passwords, reserved names.
    let dup = UserCreate {
        name: "olga".into(),
        password: "password-x".into(),
    };
    assert_eq!(
        t.host.user_create(&t.admin, dup).unwrap_err().kind,
        ErrorKind::Conflict
    );
    for (name, pw) in [
        ("a/b", "password-x"),
        ("..", "password-x"),
        ("ok", "short"),
        ("system", "password-x"),
    ] {
        let req = UserCreate {
            name: name.into(),
            password: pw.into(),
        };
        assert!(t.host.user_create(&t.admin, req).is_err(), "{name}");
    }
    // Anyone may change their own password, not another's.
    t.host
        .user_set_password(&nobody, "nick", "nick-new-pass")
        .unwrap();
    assert_eq!(
        t.host
            .user_set_password(&nobody, "olga", "hacked-pass")
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );
    // The last Administrator stays.
    assert_eq!(
        t.host.user_delete(&t.admin, "admin").unwrap_err().kind,
        ErrorKind::Conflict
    );
    assert_eq!(
        t.host
            .permission_remove(&t.admin, "admin", "host")
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );
    t.host.user_delete(&t.admin, "olga").unwrap();
    assert_eq!(
        t.host.user_delete(&t.admin, "olga").unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Its permission went with it.
    assert!(t
        .host
        .permission_list(&t.admin)
        .unwrap()
        .iter()
        .all(|p| p.user != "olga"));
    let kinds = t.event_kinds();
    for k in [
        "user.created",
        "user.deleted",
        "permission.set",
        "user.password-changed",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k}");
    }
    assert_eq!(t.host.roles().len(), 4);
}

#[test]
fn an_admins_password_change_ends_the_users_sessions() {
    let t = test_host("host-users");
    t.user("rita", Some(Role::ReadOnly));
    let s = t.host.login("rita", "rita-password", PEER).unwrap();
    t.host
        .user_set_password(&t.admin, "rita", "rita-password-2")
        .unwrap();
    assert!(t.host.authenticate(&s.token).is_err());
}

#[test]
fn host_views_need_system_view() {
    let t = test_host("host-views");
    let ro = t.user("rob", Some(Role::ReadOnly));
    let none = t.user("nora", Some(Role::NoAccess));
    let info = t.host.host_info(&ro).unwrap();
    assert!(info.cpu.threads > 0);
    let m = t.host.metrics(&ro).unwrap();
    assert!(m.contains("# TYPE keel_host_memory_total_bytes gauge"));
    assert!(m.contains("keel_datastore_free_bytes{datastore=\"datastore1\"}"));
    for err in [
        t.host.host_info(&none).err(),
        t.host.metrics(&none).err(),
        t.host.datastore_list(&none).err(),
        t.host.event_list(&none, None, 10, None).err(),
    ] {
        let err = err.unwrap();
        assert_eq!(err.kind, ErrorKind::Forbidden);
        assert!(err.message.contains("System.View"), "{err}");
    }
    assert_eq!(
        t.host
            .set_autostart_delay(&ro, std::time::Duration::ZERO)
            .unwrap_err()
            .kind,
        ErrorKind::Forbidden
    );
    assert_eq!(
        t.host.autostart_delay(&ro).unwrap(),
        crate::power::DEFAULT_AUTOSTART_DELAY
    );
}

#[test]
fn host_is_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Host>();
    fn send<T: Send>() {}
    send::<crate::Upload>();
    send::<crate::ConsoleHandle>();
}

#[test]
fn options_debug_hides_the_password() {
    let opts = options(std::path::Path::new("/x"));
    let shown = format!("{opts:?}");
    assert!(
        !shown.contains(ADMIN_PASSWORD) && shown.contains("<hidden>"),
        "{shown}"
    );
}
