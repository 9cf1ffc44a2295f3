//! Fuzzes what keeld takes from API clients before anything touches the
//! disk: request bodies (`hostd_api` types through serde_json, as axum's
//! JSON extractor decodes them), names, datastore paths and permission
//! entities (`hostd_core`).
//!
//! Besides "no panic": an accepted name or path can never leave its folder
//! (no '/', '..', NUL or control characters; a path's components are plain
//! names); a decoded body encodes back to JSON that decodes to the same.

#![no_main]

use hostd_api::{Permission, VmCreate, VmEdit};
use hostd_core::input::{parse_path, validate, Entity};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_string(&v).expect("encode");
        let back: T = serde_json::from_str(&text).expect("re-decode");
        assert_eq!(back, v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        0 => {
            if validate("VM", &text).is_ok() {
                assert!(!text.is_empty() && !text.contains('/') && !text.contains('\0'));
                assert!(text != "." && text != ".." && !text.starts_with('.'));
                assert!(!text.chars().any(char::is_control));
            }
        }
        1 => {
            if let Ok(parts) = parse_path(&text) {
                assert!(!text.starts_with('/'));
                for p in parts {
                    assert!(!p.is_empty() && p != "." && p != ".." && !p.contains('/'));
                    assert!(!p.chars().any(char::is_control));
                }
            }
        }
        2 => {
            let _ = Entity::parse(&text);
        }
        3 => round_trip::<VmCreate>(rest),
        4 => round_trip::<VmEdit>(rest),
        _ => round_trip::<Permission>(rest),
    }
});
