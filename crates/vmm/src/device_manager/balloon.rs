//! The balloon: the `--balloon [size=SIZE][,stats=on|off][,deflate_on_oom=on|off]
//! [,free_page_reporting=on|off]` flag and the virtio-balloon device it adds.

use std::str::FromStr;

use virtio::balloon::{Balloon, BalloonConfig};

use super::{AttachContext, DeviceError, DeviceManager};
use crate::config::{parse_size, parse_switch, split_options, OptionsError};

/// The form of `--balloon`, for error messages.
pub const BALLOON_FORM: &str =
    "[size=SIZE][,stats=on|off][,deflate_on_oom=on|off][,free_page_reporting=on|off]";

/// `--balloon`: stats on, the others off, an empty balloon to start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalloonOptions(pub BalloonConfig);

impl Default for BalloonOptions {
    fn default() -> Self {
        BalloonOptions(BalloonConfig {
            stats: true,
            deflate_on_oom: false,
            free_page_reporting: false,
            initial_target: 0,
        })
    }
}

/// A `--balloon` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid balloon '{given}': {problem}; expected {BALLOON_FORM}")]
pub struct BalloonOptionsError {
    pub given: String,
    pub problem: String,
}

impl BalloonOptions {
    /// Checks the options against the guest's memory size.
    pub fn check(&self, memory: u64) -> Result<(), BalloonOptionsError> {
        if self.0.initial_target > memory {
            return Err(BalloonOptionsError {
                given: format!("size={}", self.0.initial_target),
                problem: format!("larger than guest memory ({memory} bytes)"),
            });
        }
        Ok(())
    }
}

impl FromStr for BalloonOptions {
    type Err = BalloonOptionsError;

    /// An empty string (a bare `--balloon`) gives the defaults.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |e: OptionsError| BalloonOptionsError {
            given: s.to_string(),
            problem: e.to_string(),
        };
        let keys = ["size", "stats", "deflate_on_oom", "free_page_reporting"];
        let mut opts = BalloonOptions::default();
        let c = &mut opts.0;
        for (key, value) in split_options(s, &keys).map_err(err)? {
            match key {
                "size" => {
                    c.initial_target = parse_size(value).map_err(|_| {
                        err(OptionsError::Value {
                            key: key.into(),
                            value: value.into(),
                        })
                    })?
                }
                "stats" => c.stats = parse_switch(key, value).map_err(err)?,
                "deflate_on_oom" => c.deflate_on_oom = parse_switch(key, value).map_err(err)?,
                _ => c.free_page_reporting = parse_switch(key, value).map_err(err)?,
            }
        }
        Ok(opts)
    }
}

impl DeviceManager {
    /// Adds the balloon and keeps its control handle.
    pub(super) fn attach_balloon(
        &mut self,
        opts: &BalloonOptions,
        memory: u64,
        ctx: &AttachContext<'_>,
    ) -> Result<(), DeviceError> {
        let balloon = Balloon::new(opts.0.clone(), memory).map_err(DeviceError::Balloon)?;
        let handle = balloon.handle();
        self.add_virtio(Box::new(balloon), ctx)?;
        self.balloon = Some(handle);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_keys() {
        let d: BalloonOptions = "".parse().unwrap();
        assert_eq!(d, BalloonOptions::default());
        assert!(d.0.stats && !d.0.deflate_on_oom && !d.0.free_page_reporting);
        let o: BalloonOptions = "size=256M,stats=off,deflate_on_oom=on,free_page_reporting=on"
            .parse()
            .unwrap();
        assert_eq!(
            o.0,
            BalloonConfig {
                stats: false,
                deflate_on_oom: true,
                free_page_reporting: true,
                initial_target: 256 << 20,
            }
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_form() {
        for (bad, needle) in [
            ("size=lots", "invalid size 'lots'"),
            ("stats=maybe", "invalid stats 'maybe'"),
            ("colour=red", "unknown key 'colour'"),
            ("stats=on,stats=off", "given twice"),
            ("on", "'on' is not key=value"),
        ] {
            let e = bad.parse::<BalloonOptions>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(e.contains(BALLOON_FORM), "{bad}: {e}");
        }
        let big: BalloonOptions = "size=2G".parse().unwrap();
        assert!(big.check(2 << 30).is_ok());
        let e = big.check(1 << 30).unwrap_err().to_string();
        assert!(e.contains("larger than guest memory"), "{e}");
    }
}
