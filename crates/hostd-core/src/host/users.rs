//! Logins, sessions, users and permissions (the facade over `auth`), with
//! an audit event for every login, failed login and change.

use std::net::IpAddr;

use hostd_api::{Permission, Privilege, RoleInfo, Session, Severity, User, UserCreate};
use sha2::{Digest, Sha256};

use super::{lock, Caller, Host};
use crate::auth;
use crate::error::{CoreError, Result};
use crate::events::{self, NewEvent};
use crate::names;

/// How long verified basic-auth credentials are remembered.
const BASIC_CACHE_MS: u64 = 60_000;

impl Host {
    /// Checks the password (rate limited per user and per address) and
    /// returns the caller; records failures.
    fn check_login(&self, user: &str, password: &str, peer: IpAddr) -> Result<Caller> {
        let now = self.now();
        lock(&self.inner.limiter).check(user, peer, now)?;
        let ok = names::validate("User", user).is_ok()
            && password.len() <= auth::MAX_PASSWORD_LEN
            && auth::check_credentials(self.store(), user, password)?;
        if !ok {
            lock(&self.inner.limiter).failed(user, peer, now);
            let shown: String = user.chars().filter(|c| !c.is_control()).take(80).collect();
            let msg = format!("Failed login for {shown:?} from {peer}");
            let target = format!("user:{shown}");
            self.event(
                NewEvent::info("user.login-failed", &msg)
                    .severity(Severity::Warning)
                    .target(&target),
            );
            return Err(CoreError::unauthorized("Wrong user name or password"));
        }
        lock(&self.inner.limiter).succeeded(user);
        Ok(Caller {
            user: user.to_string(),
        })
    }

    /// Logs in: a new session token (12 h, sliding).
    pub fn login(&self, user: &str, password: &str, peer: IpAddr) -> Result<Session> {
        let caller = self.check_login(user, password, peer)?;
        let (token, expires_ms) = auth::create_session(self.store(), user, self.now())?;
        let target = format!("user:{user}");
        self.event(
            NewEvent::info("user.login", &format!("{user} logged in from {peer}"))
                .user(Some(user))
                .target(&target),
        );
        Ok(Session {
            token,
            user: caller.user.clone(),
            expires_ms,
            host_privileges: self.session_info(&caller)?,
        })
    }

    /// Ends a session (unknown tokens are ignored).
    pub fn logout(&self, token: &str) {
        let _ = auth::delete_session(self.store(), token);
    }

    /// The caller of a session token; Unauthorized when unknown or expired.
    pub fn authenticate(&self, token: &str) -> Result<Caller> {
        let (user, _) = auth::session_user(self.store(), token, self.now())?;
        Ok(Caller { user })
    }

    /// HTTP basic authentication: like a login, without a session. Checked
    /// credentials are remembered for a minute.
    pub fn authenticate_password(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Caller> {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        let now = self.now();
        if let Some((cached, until)) = lock(&self.inner.basic_cache).get(&key) {
            if *until > now && cached == user {
                return Ok(Caller { user: user.into() });
            }
        }
        let caller = self.check_login(user, password, peer)?;
        let mut cache = lock(&self.inner.basic_cache);
        cache.retain(|_, (_, until)| *until > now);
        cache.insert(key, (user.to_string(), now + BASIC_CACHE_MS));
        Ok(caller)
    }

    /// What the caller may do on the host.
    pub fn session_info(&self, caller: &Caller) -> Result<Vec<Privilege>> {
        auth::privileges(self.store(), &caller.user, None)
    }

    /// What the caller may do on one VM.
    pub fn vm_privileges(&self, caller: &Caller, vm: &str) -> Result<Vec<Privilege>> {
        names::validate("VM", vm)?;
        auth::privileges(self.store(), &caller.user, Some(vm))
    }

    /// The fixed roles and their privileges.
    pub fn roles(&self) -> Vec<RoleInfo> {
        auth::roles()
    }

    pub fn user_list(&self, caller: &Caller) -> Result<Vec<User>> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        auth::list_users(self.store())
    }

    /// Creates a user with no permission (it sees nothing until given one).
    pub fn user_create(&self, caller: &Caller, req: UserCreate) -> Result<User> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        names::validate("User", &req.name)?;
        if req.name == super::SYSTEM_USER {
            return Err(CoreError::conflict(format!(
                "User name {} is reserved",
                super::SYSTEM_USER
            )));
        }
        auth::check_password_policy(&req.password)?;
        let hash = auth::hash_password(&req.password)?;
        let now = self.now();
        let target = format!("user:{}", req.name);
        self.store().tx(|tx| {
            let user = auth::insert_user(tx, &req.name, &hash, now)?;
            events::insert(
                tx,
                &NewEvent::info("user.created", &format!("User {} created", req.name))
                    .user(Some(&caller.user))
                    .target(&target),
            )?;
            Ok(user)
        })
    }

    /// Deletes a user, its permissions and sessions; not the last
    /// Administrator.
    pub fn user_delete(&self, caller: &Caller, name: &str) -> Result<()> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        names::validate("User", name)?;
        let target = format!("user:{name}");
        self.store().tx(|tx| {
            if !auth::user_exists(tx, name)? {
                return Err(CoreError::not_found(format!("No user {name}")));
            }
            auth::ensure_not_last_admin(tx, name, "delete the user")?;
            tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
            events::insert(
                tx,
                &NewEvent::info("user.deleted", &format!("User {name} deleted"))
                    .user(Some(&caller.user))
                    .target(&target),
            )?;
            Ok(())
        })?;
        lock(&self.inner.basic_cache).clear();
        Ok(())
    }

    /// Sets a password: one's own, or anyone's with ModifyPermissions.
    /// Another user's sessions end when an administrator sets their password.
    pub fn user_set_password(&self, caller: &Caller, name: &str, password: &str) -> Result<()> {
        if caller.user != name {
            self.require(caller, None, Privilege::ModifyPermissions)?;
        }
        names::validate("User", name)?;
        auth::check_password_policy(password)?;
        let hash = auth::hash_password(password)?;
        let target = format!("user:{name}");
        self.store().tx(|tx| {
            let n = tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                [name, &hash],
            )?;
            if n == 0 {
                return Err(CoreError::not_found(format!("No user {name}")));
            }
            if caller.user != name {
                auth::delete_user_sessions(tx, name)?;
            }
            events::insert(
                tx,
                &NewEvent::info(
                    "user.password-changed",
                    &format!("Password of {name} changed"),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })?;
        lock(&self.inner.basic_cache).clear();
        Ok(())
    }

    pub fn permission_list(&self, caller: &Caller) -> Result<Vec<Permission>> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        auth::list_permissions(self.store())
    }

    /// Gives a user a role on `host` or `vm:NAME` (replacing the one it had
    /// there).
    pub fn permission_set(&self, caller: &Caller, p: Permission) -> Result<()> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        let target = format!("user:{}", p.user);
        self.store().tx(|tx| {
            auth::set_permission(tx, &p)?;
            events::insert(
                tx,
                &NewEvent::info(
                    "permission.set",
                    &format!(
                        "{} has the role {} on {}",
                        p.user,
                        p.role.as_str(),
                        p.entity
                    ),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })
    }

    pub fn permission_remove(&self, caller: &Caller, user: &str, entity: &str) -> Result<()> {
        self.require(caller, None, Privilege::ModifyPermissions)?;
        names::validate("User", user)?;
        let target = format!("user:{user}");
        self.store().tx(|tx| {
            auth::remove_permission(tx, user, entity)?;
            events::insert(
                tx,
                &NewEvent::info(
                    "permission.removed",
                    &format!("{user} has no more permission on {entity}"),
                )
                .user(Some(&caller.user))
                .target(&target),
            )?;
            Ok(())
        })
    }
}
