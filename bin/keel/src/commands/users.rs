//! `keel user …`, `keel permission …`

use clap::Subcommand;
use hostd_api::{Permission, Role, UserCreate};

use super::{connect, print_json, usage};
use crate::table;
use crate::Global;

#[derive(Subcommand)]
pub enum UserCmd {
    List,
    /// Creates a user (password from $KEEL_NEW_PASSWORD or a prompt).
    Create {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Sets a user's password (from $KEEL_NEW_PASSWORD or a prompt).
    Passwd {
        name: String,
    },
}

fn new_password(name: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("KEEL_NEW_PASSWORD") {
        return Ok(p);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("No password for {name}: set KEEL_NEW_PASSWORD or run keel on a terminal");
    }
    let a = rpassword::prompt_password(format!("New password for {name}: "))?;
    let b = rpassword::prompt_password("Again: ")?;
    if a != b {
        anyhow::bail!("The passwords differ");
    }
    Ok(a)
}

pub fn user(cmd: UserCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        UserCmd::List => {
            let users = c.user_list()?;
            if g.json {
                return print_json(&users);
            }
            let rows = users
                .iter()
                .map(|u| vec![u.name.clone(), table::time(u.created_ms)])
                .collect::<Vec<_>>();
            table::print(&["NAME", "CREATED (UTC)"], &rows);
        }
        UserCmd::Create { name } => {
            let pw = new_password(&name)?;
            let u = c.user_create(&UserCreate { name, password: pw })?;
            if g.json {
                return print_json(&u);
            }
            println!(
                "Created user {} (no permissions yet: see `keel permission set`)",
                u.name
            );
        }
        UserCmd::Delete { name } => {
            c.user_delete(&name)?;
            if !g.json {
                println!("Deleted user {name}");
            }
        }
        UserCmd::Passwd { name } => {
            let pw = new_password(&name)?;
            c.user_set_password(&name, &pw)?;
            if !g.json {
                println!("Changed the password of {name}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum PermissionCmd {
    /// Every permission, and the roles with their privileges.
    List,
    /// Gives USER the ROLE (Administrator, Operator, ReadOnly, NoAccess) on
    /// the host, or on one VM with --vm.
    Set {
        user: String,
        role: String,
        #[arg(long)]
        vm: Option<String>,
    },
    /// Removes USER's permission on the host, or on one VM with --vm.
    Remove {
        user: String,
        #[arg(long)]
        vm: Option<String>,
    },
}

fn entity(vm: Option<String>) -> String {
    vm.map(|v| format!("vm:{v}"))
        .unwrap_or_else(|| "host".into())
}

pub fn permission(cmd: PermissionCmd, g: &Global) -> anyhow::Result<()> {
    let c = connect(g)?;
    match cmd {
        PermissionCmd::List => {
            let perms = c.permission_list()?;
            if g.json {
                return print_json(&perms);
            }
            let rows = perms
                .iter()
                .map(|p| {
                    vec![
                        p.user.clone(),
                        p.role.as_str().to_string(),
                        p.entity.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            table::print(&["USER", "ROLE", "ON"], &rows);
        }
        PermissionCmd::Set { user, role, vm } => {
            let role = Role::parse(&role).ok_or_else(|| {
                usage(format!(
                    "'{role}' is not a role: expected Administrator, Operator, ReadOnly or NoAccess"
                ))
            })?;
            let p = Permission {
                user,
                role,
                entity: entity(vm),
            };
            c.permission_set(&p)?;
            if !g.json {
                println!("{} is {} on {}", p.user, p.role.as_str(), p.entity);
            }
        }
        PermissionCmd::Remove { user, vm } => {
            let e = entity(vm);
            c.permission_remove(&user, &e)?;
            if !g.json {
                println!("Removed {user}'s permission on {e}");
            }
        }
    }
    Ok(())
}
