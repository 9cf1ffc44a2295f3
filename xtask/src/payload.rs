//! PVH payload guests: tiny ELF64 images (`assets/payload.S`) that run on
//! the native `/dev/kvm` in milliseconds, for tests that need a running VM
//! but not Linux. Assembled with GNU `as` and linked with `ld` into the
//! cache; rebuilt when the sources change.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::host;
use crate::kernel;
use crate::paths;
use crate::util::{run_captured, sha256_hex};

const SOURCE: &str = include_str!("../assets/payload.S");
const LINKER_SCRIPT: &str = include_str!("../assets/payload.ld");

/// Where every payload is loaded and entered.
pub const LOAD_ADDRESS: u32 = 0x10_0000;

/// The payload variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Payload {
    /// Prints [`Payload::marker`], then powers off through ACPI S5 (exit 0).
    Ok,
    /// Prints its marker, loads an empty IDT and executes ud2 (exit 3).
    TripleFault,
    /// Prints its marker, then resets through the i8042 (`--no-reboot`: exit 0).
    Reset,
    /// Prints its marker, then `cli; hlt` forever (SIGTERM: exit 5).
    Hang,
    /// Prints `KEEL-PAYLOAD-READY`, waits for the ACPI power button, prints
    /// `KEEL-PAYLOAD-BUTTON` and powers off (SIGTERM: exit 0).
    Button,
    /// Prints its marker, then echoes every byte COM1 receives, forever.
    Echo,
}

impl Payload {
    pub const ALL: [Payload; 6] = [
        Payload::Ok,
        Payload::TripleFault,
        Payload::Reset,
        Payload::Hang,
        Payload::Button,
        Payload::Echo,
    ];

    /// The variant's name (`ok`, `triple-fault`, …).
    pub fn name(self) -> &'static str {
        match self {
            Payload::Ok => "ok",
            Payload::TripleFault => "triple-fault",
            Payload::Reset => "reset",
            Payload::Hang => "hang",
            Payload::Button => "button",
            Payload::Echo => "echo",
        }
    }

    /// The line the payload prints first on COM1.
    pub fn marker(self) -> &'static str {
        match self {
            Payload::Ok => "KEEL-PAYLOAD-OK",
            Payload::TripleFault => "KEEL-PAYLOAD-TRIPLE-FAULT",
            Payload::Reset => "KEEL-PAYLOAD-RESET",
            Payload::Hang => "KEEL-PAYLOAD-HANG",
            Payload::Button => "KEEL-PAYLOAD-READY",
            Payload::Echo => "KEEL-PAYLOAD-ECHO",
        }
    }

    /// Parses a variant name.
    pub fn from_name(name: &str) -> Option<Payload> {
        Payload::ALL.into_iter().find(|p| p.name() == name)
    }

    fn symbol(self) -> String {
        format!("VARIANT_{}", self.name().replace('-', "_").to_uppercase())
    }
}

/// Builds (or reuses) a payload in the default cache; returns the ELF path.
pub fn build(variant: Payload) -> Result<PathBuf> {
    build_in(&paths::cache_dir()?, variant)
}

/// Builds (or reuses) a payload in `<cache>/payload/`.
pub fn build_in(cache: &Path, variant: Payload) -> Result<PathBuf> {
    let dir = cache.join("payload");
    let hash = sha256_hex(format!("{SOURCE}\0{LINKER_SCRIPT}\0{}", variant.name()).as_bytes());
    let elf = dir.join(format!("{}-{}.elf", variant.name(), &hash[..12]));
    if elf.exists() {
        return Ok(elf);
    }
    host::ensure(&[host::AS, host::LD])?;
    let work = dir.join(format!(".build-{}-{}", variant.name(), std::process::id()));
    fs::create_dir_all(&work).with_context(|| format!("Creating {}", work.display()))?;
    let result = assemble(&work, variant, &elf);
    let _ = fs::remove_dir_all(&work);
    result.with_context(|| format!("Building the {} payload", variant.name()))?;
    Ok(elf)
}

fn assemble(work: &Path, variant: Payload, dest: &Path) -> Result<()> {
    let (src, lds, obj, out) = (
        work.join("payload.S"),
        work.join("payload.ld"),
        work.join("payload.o"),
        work.join("payload.elf"),
    );
    fs::write(&src, SOURCE)?;
    fs::write(&lds, LINKER_SCRIPT)?;
    run_captured(
        Command::new("as")
            .args(["--64", "--defsym"])
            .arg(format!("{}=1", variant.symbol()))
            .arg("-o")
            .arg(&obj)
            .arg(&src),
    )?;
    run_captured(
        Command::new("ld")
            .arg("-T")
            .arg(&lds)
            .arg("-o")
            .arg(&out)
            .arg(&obj),
    )?;
    let image = fs::read(&out)?;
    let entry = kernel::pvh_entry(&image)?;
    ensure!(
        entry == Some(LOAD_ADDRESS),
        "The payload's PVH note names {entry:x?}, expected {LOAD_ADDRESS:#x}"
    );
    fs::rename(&out, dest).with_context(|| format!("Storing {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_assembles_into_a_pvh_elf64() {
        let cache = std::env::temp_dir().join(format!("xtask-payload-{}", std::process::id()));
        for variant in Payload::ALL {
            let path = build_in(&cache, variant).unwrap();
            let image = fs::read(&path).unwrap();
            assert_eq!(&image[..5], b"\x7fELF\x02", "{variant:?} is not ELF64");
            assert_eq!(kernel::pvh_entry(&image).unwrap(), Some(LOAD_ADDRESS));
            let marker = variant.marker().as_bytes();
            assert!(
                image.windows(marker.len()).any(|w| w == marker),
                "{variant:?} lacks its marker"
            );
            // A second build reuses the cached image.
            assert_eq!(build_in(&cache, variant).unwrap(), path);
        }
        fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn names_round_trip() {
        for variant in Payload::ALL {
            assert_eq!(Payload::from_name(variant.name()), Some(variant));
        }
        assert_eq!(Payload::from_name("nope"), None);
        assert_eq!(Payload::TripleFault.symbol(), "VARIANT_TRIPLE_FAULT");
    }
}
