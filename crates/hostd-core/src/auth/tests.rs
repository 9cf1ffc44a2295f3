use super::*;
use std::net::Ipv4Addr;

fn store_with_users(users: &[&str]) -> Store {
    let store = Store::memory();
    let hash = hash_password("password1").unwrap();
    store
        .tx(|tx| {
            for u in users {
                insert_user(tx, u, &hash, 1)?;
            }
            Ok(())
        })
        .unwrap();
    store
}

fn add_vm(store: &Store, name: &str) {
    store
        .with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO datastores (name, path) VALUES ('ds', '/ds')",
                [],
            )?;
            c.execute(
                "INSERT INTO vms (name, datastore, folder, config_json, created_ms)
                 VALUES (?1, 'ds', ?1, '{}', 0)",
                [name],
            )
        })
        .unwrap();
}

fn perm(user: &str, role: Role, entity: &str) -> Permission {
    Permission {
        user: user.into(),
        role,
        entity: entity.into(),
    }
}

#[test]
fn each_role_has_its_privileges() {
    use Privilege::*;
    assert_eq!(role_privileges(Role::Administrator).len(), 8);
    assert_eq!(
        role_privileges(Role::Operator),
        &[SystemView, VmPower, VmConsole, DatastoreBrowse]
    );
    assert_eq!(
        role_privileges(Role::ReadOnly),
        &[SystemView, DatastoreBrowse]
    );
    assert!(role_privileges(Role::NoAccess).is_empty());
    assert_eq!(roles().len(), 4);

    let store = store_with_users(&["admin", "op", "ro", "none", "nobody"]);
    for (u, r) in [
        ("admin", Role::Administrator),
        ("op", Role::Operator),
        ("ro", Role::ReadOnly),
        ("none", Role::NoAccess),
    ] {
        store
            .with(|c| Ok(set_permission(c, &perm(u, r, "host"))))
            .unwrap()
            .unwrap();
    }
    assert!(require(&store, "admin", None, HostConfig).is_ok());
    assert!(require(&store, "op", Some("x"), VmPower).is_ok());
    let err = require(&store, "op", None, VmConfig).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert!(err.message.contains("VirtualMachine.Config"), "{err}");
    assert!(require(&store, "ro", None, SystemView).is_ok());
    assert!(require(&store, "ro", None, VmPower).is_err());
    assert!(require(&store, "none", None, SystemView).is_err());
    // No permission at all: nothing.
    assert!(privileges(&store, "nobody", None).unwrap().is_empty());
}

#[test]
fn a_vm_permission_overrides_the_host_one() {
    let store = store_with_users(&["admin", "bob"]);
    add_vm(&store, "web1");
    add_vm(&store, "db1");
    store
        .tx(|tx| {
            set_permission(tx, &perm("admin", Role::Administrator, "host"))?;
            set_permission(tx, &perm("bob", Role::ReadOnly, "host"))?;
            set_permission(tx, &perm("bob", Role::Operator, "vm:web1"))?;
            set_permission(tx, &perm("bob", Role::NoAccess, "vm:db1"))
        })
        .unwrap();
    assert!(require(&store, "bob", Some("web1"), Privilege::VmPower).is_ok());
    assert!(require(&store, "bob", None, Privilege::VmPower).is_err());
    assert!(require(&store, "bob", Some("other"), Privilege::SystemView).is_ok());
    let err = require(&store, "bob", Some("db1"), Privilege::SystemView).unwrap_err();
    assert!(err.message.contains("vm:db1"), "{err}");
    // Replacing a permission updates it.
    store
        .with(|c| Ok(set_permission(c, &perm("bob", Role::ReadOnly, "vm:web1"))))
        .unwrap()
        .unwrap();
    assert!(require(&store, "bob", Some("web1"), Privilege::VmPower).is_err());
    assert_eq!(list_permissions(&store).unwrap().len(), 4);
    // Unknown users, VMs and entities.
    let e = store
        .with(|c| Ok(set_permission(c, &perm("ghost", Role::ReadOnly, "host"))))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = store
        .with(|c| Ok(set_permission(c, &perm("bob", Role::ReadOnly, "vm:ghost"))))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = store
        .with(|c| Ok(set_permission(c, &perm("bob", Role::ReadOnly, "cluster"))))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
}

#[test]
fn the_last_administrator_stays() {
    let store = store_with_users(&["admin", "second"]);
    store
        .with(|c| {
            Ok(set_permission(
                c,
                &perm("admin", Role::Administrator, "host"),
            ))
        })
        .unwrap()
        .unwrap();
    let demote = |store: &Store| {
        store
            .with(|c| Ok(set_permission(c, &perm("admin", Role::ReadOnly, "host"))))
            .unwrap()
    };
    assert_eq!(demote(&store).unwrap_err().kind, ErrorKind::Conflict);
    let remove = |store: &Store| {
        store
            .with(|c| Ok(remove_permission(c, "admin", "host")))
            .unwrap()
    };
    assert_eq!(remove(&store).unwrap_err().kind, ErrorKind::Conflict);
    store
        .with(|c| {
            Ok(set_permission(
                c,
                &perm("second", Role::Administrator, "host"),
            ))
        })
        .unwrap()
        .unwrap();
    demote(&store).unwrap();
    assert_eq!(
        store
            .with(|c| Ok(ensure_not_last_admin(c, "second", "delete")))
            .unwrap()
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );
    let e = store
        .with(|c| Ok(remove_permission(c, "second", "vm:x")))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn passwords_hash_and_verify() {
    let h = hash_password("correct horse").unwrap();
    assert!(h.starts_with("$argon2id$"));
    assert!(verify_password(&h, "correct horse"));
    assert!(!verify_password(&h, "correct horsf"));
    assert!(!verify_password("not a hash", "x"));
    assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    let store = store_with_users(&["alice"]);
    assert!(check_credentials(&store, "alice", "password1").unwrap());
    assert!(!check_credentials(&store, "alice", "password2").unwrap());
    assert!(!check_credentials(&store, "ghost", "password1").unwrap());
    assert!(check_password_policy("short").is_err());
    assert!(check_password_policy("long enough").is_ok());
    assert!(check_password_policy("with\0nul!").is_err());
    assert!(check_password_policy(&"x".repeat(2000)).is_err());
}

#[test]
fn sessions_slide_and_expire() {
    let store = store_with_users(&["alice"]);
    let t0 = 1_000_000;
    let (token, expires) = create_session(&store, "alice", t0).unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(expires, t0 + SESSION_TTL_MS);
    // The database holds only the hash.
    let stored: String = store
        .with(|c| c.query_row("SELECT token_hash FROM sessions", [], |r| r.get(0)))
        .unwrap();
    assert_ne!(stored, token);
    assert_eq!(
        session_user(&store, &token, t0 + 1000).unwrap(),
        ("alice".into(), expires)
    );
    // Used an hour later: pushed back.
    let t1 = t0 + 3600 * 1000;
    let (_, e1) = session_user(&store, &token, t1).unwrap();
    assert_eq!(e1, t1 + SESSION_TTL_MS);
    // Unused for 12 h: gone.
    let err = session_user(&store, &token, e1).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(
        session_user(&store, &token, t1).is_err(),
        "deleted when seen expired"
    );
    // Garbage and logout.
    assert!(session_user(&store, "nothex", t0).is_err());
    assert!(session_user(&store, &"0".repeat(64), t0).is_err());
    let (token2, _) = create_session(&store, "alice", t0).unwrap();
    delete_session(&store, &token2).unwrap();
    assert!(session_user(&store, &token2, t0).is_err());
}

#[test]
fn failed_logins_are_rate_limited_per_user_and_peer() {
    let mut lim = Limiter::default();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let t = 10_000_000;
    for i in 0..RATE_MAX_PER_USER - 1 {
        lim.check("alice", ip, t + i as u64).unwrap();
        lim.failed("alice", ip, t + i as u64);
    }
    lim.check("alice", ip, t + 10).unwrap();
    lim.failed("alice", ip, t + 10);
    let err = lim.check("alice", other, t + 20).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert!(err.message.contains("user alice"), "{err}");
    // Another user from the same address is still fine.
    lim.check("bob", ip, t + 20).unwrap();
    // After the lockout the user may try again.
    lim.check("alice", ip, t + 10 + RATE_LOCKOUT_MS).unwrap();

    // Failures spread over more than the window do not add up.
    let mut lim = Limiter::default();
    for i in 0..10u64 {
        lim.failed("carol", ip, t + i * RATE_WINDOW_MS / 2);
    }
    lim.check("carol", ip, t + 10 * RATE_WINDOW_MS).unwrap();

    // One address trying many users is stopped too.
    let mut lim = Limiter::default();
    for i in 0..RATE_MAX_PER_PEER {
        lim.failed(&format!("u{i}"), other, t);
    }
    let err = lim.check("someone", other, t + 1).unwrap_err();
    assert!(err.message.contains("address 127.0.0.2"), "{err}");
    lim.check("someone", ip, t + 1).unwrap();

    // Success clears the user's count.
    let mut lim = Limiter::default();
    for _ in 0..RATE_MAX_PER_USER - 1 {
        lim.failed("dave", ip, t);
    }
    lim.succeeded("dave");
    lim.failed("dave", ip, t);
    lim.check("dave", ip, t).unwrap();
}
