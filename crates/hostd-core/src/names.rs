//! Names of VMs, users and datastores, and the entity references of
//! permissions (`host`, `vm:NAME`).

use hostd_api::MAX_NAME_LEN;
use thiserror::Error;

use crate::error::CoreError;

/// Bytes a name may take (so that `NAME.toml` and temporary names like
/// `.NAME.creating` fit in a 255-byte file name).
const MAX_NAME_BYTES: usize = 200;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} name is empty")]
    Empty { what: &'static str },
    #[error("{what} name is longer than {MAX_NAME_LEN} characters")]
    TooLong { what: &'static str },
    #[error("{what} name {name:?} contains '/'")]
    Slash { what: &'static str, name: String },
    #[error("{what} name contains a NUL or control character")]
    Control { what: &'static str },
    #[error("{what} name {name:?} is not allowed ('.' and '..' are reserved)")]
    Dots { what: &'static str, name: String },
    #[error("{what} name {name:?} starts with '.' (reserved for the host's temporary files)")]
    LeadingDot { what: &'static str, name: String },
    #[error("{what} name {name:?} starts or ends with a space")]
    Space { what: &'static str, name: String },
}

impl From<NameError> for CoreError {
    fn from(err: NameError) -> CoreError {
        CoreError::bad_request(err.to_string())
    }
}

/// Checks a VM, user or datastore name: 1–80 characters, no '/', no NUL or
/// control characters, not '.' or '..', no leading '.', no leading or
/// trailing space. `what` is "VM", "User" or "Datastore" for the message.
pub fn validate(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(NameError::Control { what });
    }
    if name.chars().count() > MAX_NAME_LEN || name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { what });
    }
    let owned = || name.to_string();
    if name.contains('/') {
        return Err(NameError::Slash {
            what,
            name: owned(),
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots {
            what,
            name: owned(),
        });
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot {
            what,
            name: owned(),
        });
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::Space {
            what,
            name: owned(),
        });
    }
    Ok(())
}

/// What a permission applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Entity {
    Host,
    Vm(String),
}

impl Entity {
    /// Parses `host` or `vm:NAME` (the name checked).
    pub fn parse(s: &str) -> Result<Entity, CoreError> {
        if s == "host" {
            return Ok(Entity::Host);
        }
        match s.strip_prefix("vm:") {
            Some(name) => {
                validate("VM", name)?;
                Ok(Entity::Vm(name.to_string()))
            }
            None => Err(CoreError::bad_request(format!(
                "Entity {s:?} is neither 'host' nor 'vm:NAME'"
            ))),
        }
    }

    pub fn vm(name: &str) -> Entity {
        Entity::Vm(name.to_string())
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entity::Host => f.write_str("host"),
            Entity::Vm(name) => write!(f, "vm:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in [
            "web1",
            "a",
            "My VM (test)",
            "db-01_x",
            "ü-名前",
            &"x".repeat(80),
        ] {
            assert_eq!(validate("VM", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_fail_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("a/b", "'/'"),
            ("/", "'/'"),
            ("..", "reserved"),
            (".", "reserved"),
            (".hidden", "starts with '.'"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            (" a", "space"),
            ("a ", "space"),
        ];
        for (name, needle) in cases {
            let err = validate("VM", name).unwrap_err().to_string();
            assert!(err.contains(needle), "{name:?}: {err}");
            assert!(err.starts_with("VM name"), "{err}");
        }
        let long = "x".repeat(81);
        assert_eq!(
            validate("User", &long),
            Err(NameError::TooLong { what: "User" })
        );
        // 80 characters but too many bytes for a file name with suffixes.
        let wide = "名".repeat(80);
        assert!(validate("VM", &wide).is_err());
    }

    #[test]
    fn entities_parse_and_print() {
        assert_eq!(Entity::parse("host").unwrap(), Entity::Host);
        assert_eq!(Entity::parse("vm:web1").unwrap(), Entity::vm("web1"));
        assert_eq!(Entity::vm("web1").to_string(), "vm:web1");
        assert!(Entity::parse("vm:../x").is_err());
        assert!(Entity::parse("vm:").is_err());
        assert!(Entity::parse("datastore:x").is_err());
    }
}
