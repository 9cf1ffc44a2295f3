//! Users, passwords (argon2id), sessions, roles, privileges, permissions
//! and failed-login rate limiting. The facade (`host/users.rs`) checks the
//! caller's privileges and records the audit events; this module is the
//! mechanism.
//!
//! - A session token is 32 random bytes, hex; only its SHA-256 is stored.
//!   A session lasts 12 h after its last use (sliding).
//! - A permission binds a user and a role to `host` or `vm:NAME`; for a VM,
//!   the VM's permission overrides the host's.
//! - After 5 failed logins for a user (or 20 from one address) within a
//!   minute, logins for it are refused for 5 minutes.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hostd_api::{Permission, Privilege, Role, RoleInfo, User};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, ErrorKind, Result};
use crate::fsutil::random_hex;
use crate::names::{self, Entity};
use crate::store::Store;

/// How long a session lives after its last use.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// A session's expiry is pushed back at most once per this long.
const SESSION_SLIDE_MS: u64 = 60 * 1000;
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;

pub const RATE_WINDOW_MS: u64 = 60 * 1000;
pub const RATE_MAX_PER_USER: usize = 5;
pub const RATE_MAX_PER_PEER: usize = 20;
pub const RATE_LOCKOUT_MS: u64 = 5 * 60 * 1000;

// ---- roles and privileges ----------------------------------------------------

const ALL: &[Privilege] = &[
    Privilege::SystemView,
    Privilege::VmPower,
    Privilege::VmConsole,
    Privilege::VmConfig,
    Privilege::DatastoreFiles,
    Privilege::DatastoreBrowse,
    Privilege::ModifyPermissions,
    Privilege::HostConfig,
];

/// What a role may do.
pub fn role_privileges(role: Role) -> &'static [Privilege] {
    match role {
        Role::Administrator => ALL,
        Role::Operator => &[
            Privilege::SystemView,
            Privilege::VmPower,
            Privilege::VmConsole,
            Privilege::DatastoreBrowse,
        ],
        Role::ReadOnly => &[Privilege::SystemView, Privilege::DatastoreBrowse],
        Role::NoAccess => &[],
    }
}

pub fn roles() -> Vec<RoleInfo> {
    Role::ALL
        .into_iter()
        .map(|role| RoleInfo {
            role,
            privileges: role_privileges(role).to_vec(),
        })
        .collect()
}

fn parse_role(s: &str) -> Role {
    // Written by this code only; an unknown value grants nothing.
    Role::parse(s).unwrap_or(Role::NoAccess)
}

/// The user's role on exactly this entity.
pub fn role_on(conn: &Connection, user: &str, entity: &Entity) -> rusqlite::Result<Option<Role>> {
    conn.query_row(
        "SELECT role FROM permissions WHERE user = ?1 AND entity = ?2",
        params![user, entity.to_string()],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map(|r| r.map(|s| parse_role(&s)))
}

/// The role that applies to `user` on the host (`vm` None) or on a VM
/// (the VM's permission, else the host's).
pub fn effective_role(store: &Store, user: &str, vm: Option<&str>) -> Result<Option<Role>> {
    store.with(|c| {
        if let Some(vm) = vm {
            if let Some(role) = role_on(c, user, &Entity::vm(vm))? {
                return Ok(Some(role));
            }
        }
        role_on(c, user, &Entity::Host)
    })
}

pub fn privileges(store: &Store, user: &str, vm: Option<&str>) -> Result<Vec<Privilege>> {
    Ok(effective_role(store, user, vm)?
        .map(|r| role_privileges(r).to_vec())
        .unwrap_or_default())
}

/// Forbidden unless `user` holds `privilege` on the host or the VM.
pub fn require(store: &Store, user: &str, vm: Option<&str>, privilege: Privilege) -> Result<()> {
    if privileges(store, user, vm)?.contains(&privilege) {
        return Ok(());
    }
    let entity = match vm {
        Some(vm) => Entity::vm(vm).to_string(),
        None => "host".to_string(),
    };
    Err(CoreError::forbidden(format!(
        "Permission denied: {} is needed on {entity}",
        privilege.as_str()
    )))
}

// ---- passwords ------------------------------------------------------------------

fn argon2() -> Argon2<'static> {
    if cfg!(test) {
        // Fast in unoptimized test builds; verification reads the
        // parameters from the hash, so production hashes still verify.
        let params = argon2::Params::new(256, 1, 1, None).unwrap_or_default();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    } else {
        Argon2::default()
    }
}

pub fn check_password_policy(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(CoreError::bad_request(format!(
            "Password is shorter than {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(CoreError::bad_request(format!(
            "Password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    if password.contains('\0') {
        return Err(CoreError::bad_request("Password contains a NUL character"));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| CoreError::internal(format!("Random salt: {e}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| CoreError::internal(format!("Password salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::internal(format!("Hashing the password: {e}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks a user's password; false for unknown users too (after the same
/// work, so that timing does not tell which users exist).
pub fn check_credentials(store: &Store, user: &str, password: &str) -> Result<bool> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash: Option<String> = store.with(|c| {
        c.query_row(
            "SELECT password_hash FROM users WHERE name = ?1",
            [user],
            |r| r.get(0),
        )
        .optional()
    })?;
    match hash {
        Some(hash) => Ok(verify_password(&hash, password)),
        None => {
            let dummy = match DUMMY.get() {
                Some(d) => d,
                None => {
                    let h = hash_password("keel-dummy-password")?;
                    DUMMY.get_or_init(|| h)
                }
            };
            let _ = verify_password(dummy, password);
            Ok(false)
        }
    }
}

// ---- users and permissions --------------------------------------------------------

pub fn user_exists(conn: &Connection, user: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM users WHERE name = ?1", [user], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

pub fn list_users(store: &Store) -> Result<Vec<User>> {
    store.with(|c| {
        let mut stmt = c.prepare("SELECT name, created_ms FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(User {
                name: r.get(0)?,
                created_ms: r.get::<_, i64>(1)? as u64,
            })
        })?;
        rows.collect()
    })
}

/// Inserts a user (the name and password already checked).
pub fn insert_user(conn: &Connection, name: &str, hash: &str, now: u64) -> Result<User> {
    if user_exists(conn, name)? {
        return Err(CoreError::conflict(format!("User {name} already exists")));
    }
    conn.execute(
        "INSERT INTO users (name, password_hash, created_ms) VALUES (?1, ?2, ?3)",
        params![name, hash, now as i64],
    )?;
    Ok(User {
        name: name.to_string(),
        created_ms: now,
    })
}

fn host_admin_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM permissions WHERE entity = 'host' AND role = 'Administrator'",
        [],
        |r| r.get(0),
    )
}

/// Conflict when `user` is the only Administrator of the host.
pub fn ensure_not_last_admin(conn: &Connection, user: &str, doing: &str) -> Result<()> {
    if role_on(conn, user, &Entity::Host)? == Some(Role::Administrator)
        && host_admin_count(conn)? <= 1
    {
        return Err(CoreError::conflict(format!(
            "Cannot {doing}: {user} is the host's last Administrator"
        )));
    }
    Ok(())
}

pub fn list_permissions(store: &Store) -> Result<Vec<Permission>> {
    store.with(|c| {
        let mut stmt =
            c.prepare("SELECT user, role, entity FROM permissions ORDER BY user, entity")?;
        let rows = stmt.query_map([], |r| {
            Ok(Permission {
                user: r.get(0)?,
                role: parse_role(&r.get::<_, String>(1)?),
                entity: r.get(2)?,
            })
        })?;
        rows.collect()
    })
}

/// Sets (inserts or replaces) a permission; the user and entity must exist.
pub fn set_permission(conn: &Connection, p: &Permission) -> Result<()> {
    names::validate("User", &p.user)?;
    let entity = Entity::parse(&p.entity)?;
    if !user_exists(conn, &p.user)? {
        return Err(CoreError::not_found(format!("No user {}", p.user)));
    }
    match &entity {
        Entity::Host => {
            if p.role != Role::Administrator {
                ensure_not_last_admin(conn, &p.user, "change the role")?;
            }
        }
        Entity::Vm(vm) => {
            let exists = conn
                .query_row("SELECT 1 FROM vms WHERE name = ?1", [vm], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(CoreError::not_found(format!("No VM {vm}")));
            }
        }
    }
    conn.execute(
        "INSERT INTO permissions (user, entity, role) VALUES (?1, ?2, ?3)
         ON CONFLICT(user, entity) DO UPDATE SET role = excluded.role",
        params![p.user, entity.to_string(), p.role.as_str()],
    )?;
    Ok(())
}

pub fn remove_permission(conn: &Connection, user: &str, entity: &str) -> Result<()> {
    let entity = Entity::parse(entity)?;
    if entity == Entity::Host {
        ensure_not_last_admin(conn, user, "remove the permission")?;
    }
    let n = conn.execute(
        "DELETE FROM permissions WHERE user = ?1 AND entity = ?2",
        params![user, entity.to_string()],
    )?;
    if n == 0 {
        return Err(CoreError::not_found(format!(
            "User {user} has no permission on {entity}"
        )));
    }
    Ok(())
}

// ---- sessions ----------------------------------------------------------------------

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new session for `user`: the token (shown once) and its expiry.
pub fn create_session(store: &Store, user: &str, now: u64) -> Result<(String, u64)> {
    let token = random_hex(32).map_err(|e| CoreError::internal(format!("Random token: {e}")))?;
    let expires = now + SESSION_TTL_MS;
    store.with(|c| {
        c.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now as i64])?;
        c.execute(
            "INSERT INTO sessions (token_hash, user, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![token_hash(&token), user, now as i64, expires as i64],
        )
    })?;
    Ok((token, expires))
}

/// The user of a live session (its expiry pushed back); Unauthorized when
/// the token is unknown or expired.
pub fn session_user(store: &Store, token: &str, now: u64) -> Result<(String, u64)> {
    let unauthorized = || CoreError::unauthorized("Session is unknown or has expired; log in");
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unauthorized());
    }
    let hash = token_hash(&token.to_ascii_lowercase());
    let row: Option<(String, i64)> = store.with(|c| {
        c.query_row(
            "SELECT user, expires_ms FROM sessions WHERE token_hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
    })?;
    let (user, expires) = row.ok_or_else(unauthorized)?;
    let expires = expires as u64;
    if expires <= now {
        store.with(|c| c.execute("DELETE FROM sessions WHERE token_hash = ?1", [&hash]))?;
        return Err(unauthorized());
    }
    let fresh = now + SESSION_TTL_MS;
    if fresh >= expires + SESSION_SLIDE_MS {
        store.with(|c| {
            c.execute(
                "UPDATE sessions SET expires_ms = ?2 WHERE token_hash = ?1",
                params![hash, fresh as i64],
            )
        })?;
        return Ok((user, fresh));
    }
    Ok((user, expires))
}

pub fn delete_session(store: &Store, token: &str) -> Result<()> {
    store.with(|c| {
        c.execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            [token_hash(&token.to_ascii_lowercase())],
        )
    })?;
    Ok(())
}

pub fn delete_user_sessions(conn: &Connection, user: &str) -> rusqlite::Result<usize> {
    conn.execute("DELETE FROM sessions WHERE user = ?1", [user])
}

// ---- rate limiting -------------------------------------------------------------------

#[derive(Default)]
struct Entry {
    failures: VecDeque<u64>,
    locked_until: u64,
}

/// Failed logins per user and per peer address, in memory.
#[derive(Default)]
pub struct Limiter {
    entries: HashMap<String, Entry>,
}

fn keys(user: &str, peer: IpAddr) -> [(String, usize); 2] {
    [
        (format!("user:{user}"), RATE_MAX_PER_USER),
        (format!("peer:{peer}"), RATE_MAX_PER_PEER),
    ]
}

impl Limiter {
    /// RateLimited while the user or the peer is locked out.
    pub fn check(&self, user: &str, peer: IpAddr, now: u64) -> Result<()> {
        for (key, _) in keys(user, peer) {
            if let Some(e) = self.entries.get(&key) {
                if e.locked_until > now {
                    let secs = (e.locked_until - now).div_ceil(1000);
                    let who = if key.starts_with("user:") {
                        format!("user {user}")
                    } else {
                        format!("address {peer}")
                    };
                    return Err(CoreError::new(
                        ErrorKind::RateLimited,
                        format!("Too many failed logins for {who}; try again in {secs} s"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Counts a failure; locks the user or peer out when it passes its limit.
    pub fn failed(&mut self, user: &str, peer: IpAddr, now: u64) {
        if self.entries.len() > 10_000 {
            self.entries.retain(|_, e| {
                e.locked_until > now || e.failures.back().is_some_and(|&t| t + RATE_WINDOW_MS > now)
            });
        }
        for (key, max) in keys(user, peer) {
            let e = self.entries.entry(key).or_default();
            e.failures.push_back(now);
            while e
                .failures
                .front()
                .is_some_and(|&t| t + RATE_WINDOW_MS <= now)
            {
                e.failures.pop_front();
            }
            if e.failures.len() >= max {
                e.locked_until = now + RATE_LOCKOUT_MS;
                e.failures.clear();
            }
        }
    }

    /// A successful login clears the user's count.
    pub fn succeeded(&mut self, user: &str) {
        self.entries.remove(&format!("user:{user}"));
    }
}

#[cfg(test)]
mod tests;
