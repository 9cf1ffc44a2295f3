//! The little of ELF the guest builder needs: a dynamic object's
//! interpreter (`PT_INTERP`) and the shared libraries it names
//! (`DT_NEEDED`, with `DT_RUNPATH`/`DT_RPATH`), read from an x86-64
//! little-endian ELF64 file.

/// What a file needs from the dynamic loader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2` (none for libraries
    /// and static programs).
    pub interp: Option<String>,
    /// `DT_NEEDED` sonames, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` or `DT_RPATH` directories.
    pub runpath: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("Not an x86-64 little-endian ELF64 file")]
    NotElf64,
    #[error("ELF {0} lies outside the file")]
    OutOfBounds(&'static str),
    #[error("ELF dynamic string table is not mapped by any PT_LOAD segment")]
    UnmappedStrtab,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const EM_X86_64: u16 = 62;

/// True when `data` starts with the ELF magic.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF")
}

fn bytes<'a>(data: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::OutOfBounds(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::OutOfBounds(what))?;
    let end = start.checked_add(len).ok_or(ElfError::OutOfBounds(what))?;
    data.get(start..end).ok_or(ElfError::OutOfBounds(what))
}

fn u16_at(data: &[u8], off: u64, what: &'static str) -> Result<u16, ElfError> {
    let b = bytes(data, off, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(data: &[u8], off: u64, what: &'static str) -> Result<u32, ElfError> {
    let b = bytes(data, off, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(data: &[u8], off: u64, what: &'static str) -> Result<u64, ElfError> {
    let b = bytes(data, off, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// A NUL-terminated string starting at `off`.
fn c_str(data: &[u8], off: u64, what: &'static str) -> Result<String, ElfError> {
    let start = usize::try_from(off).map_err(|_| ElfError::OutOfBounds(what))?;
    let tail = data.get(start..).ok_or(ElfError::OutOfBounds(what))?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(ElfError::OutOfBounds(what))?;
    Ok(String::from_utf8_lossy(&tail[..len]).into_owned())
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Reads the interpreter and the dynamic section of an ELF64 x86-64 file.
pub fn dynamic(data: &[u8]) -> Result<Dynamic, ElfError> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if !is_elf(data) || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(ElfError::NotElf64);
    }
    if u16_at(data, 18, "header")? != EM_X86_64 {
        return Err(ElfError::NotElf64);
    }
    let phoff = u64_at(data, 32, "header")?;
    let phentsize = u64::from(u16_at(data, 54, "header")?);
    let phnum = u64::from(u16_at(data, 56, "header")?);
    if phentsize < 56 {
        return Err(ElfError::OutOfBounds("program header"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or(ElfError::OutOfBounds("program header"))?;
        segments.push(Segment {
            kind: u32_at(data, at, "program header")?,
            offset: u64_at(data, at + 8, "program header")?,
            vaddr: u64_at(data, at + 16, "program header")?,
            filesz: u64_at(data, at + 32, "program header")?,
        });
    }
    let mut out = Dynamic::default();
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let raw = bytes(data, interp.offset, interp.filesz, "PT_INTERP")?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        out.interp = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
    }
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok(out); // static
    };
    let table = bytes(data, dynamic.offset, dynamic.filesz, "PT_DYNAMIC")?;
    let mut entries = Vec::new();
    for entry in table.chunks_exact(16) {
        let tag = u64_at(entry, 0, "dynamic entry")?;
        let val = u64_at(entry, 8, "dynamic entry")?;
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, val));
    }
    let Some(strtab_vaddr) = entries.iter().find(|e| e.0 == DT_STRTAB).map(|e| e.1) else {
        return Ok(out);
    };
    let strtab = segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| strtab_vaddr >= s.vaddr && strtab_vaddr - s.vaddr < s.filesz)
        .map(|s| s.offset + (strtab_vaddr - s.vaddr))
        .ok_or(ElfError::UnmappedStrtab)?;
    for (tag, val) in entries {
        let at = strtab
            .checked_add(val)
            .ok_or(ElfError::OutOfBounds("dynamic string"))?;
        match tag {
            DT_NEEDED => out.needed.push(c_str(data, at, "dynamic string")?),
            DT_RPATH | DT_RUNPATH => out.runpath.extend(
                c_str(data, at, "dynamic string")?
                    .split(':')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            ),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with PT_INTERP, PT_LOAD and PT_DYNAMIC.
    fn synthetic(needed: &[&str], interp: Option<&str>) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offsets = Vec::new();
        for name in needed {
            offsets.push(strtab.len() as u64);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let runpath_off = strtab.len() as u64;
        strtab.extend_from_slice(b"/opt/a:/opt/b\0");
        let interp_bytes = interp
            .map(|i| format!("{i}\0").into_bytes())
            .unwrap_or_default();
        let phnum = if interp.is_some() { 3 } else { 2 };
        let ph_end = 64 + 56 * phnum as u64;
        let interp_off = ph_end;
        let strtab_off = interp_off + interp_bytes.len() as u64;
        let dyn_off = strtab_off + strtab.len() as u64;
        let mut dynamic = Vec::new();
        for off in &offsets {
            dynamic.extend_from_slice(&DT_NEEDED.to_le_bytes());
            dynamic.extend_from_slice(&off.to_le_bytes());
        }
        // The string table's address is a vaddr; PT_LOAD maps file 0 at 0x400000.
        for (tag, val) in [
            (DT_STRTAB, 0x40_0000 + strtab_off),
            (DT_RUNPATH, runpath_off),
            (DT_NULL, 0),
        ] {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&val.to_le_bytes());
        }
        let total = dyn_off + dynamic.len() as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut ph = |kind: u32, offset: u64, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&offset.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&p);
        };
        if interp.is_some() {
            ph(PT_INTERP, interp_off, 0, interp_bytes.len() as u64);
        }
        ph(PT_LOAD, 0, 0x40_0000, total);
        ph(
            PT_DYNAMIC,
            dyn_off,
            0x40_0000 + dyn_off,
            dynamic.len() as u64,
        );
        f.extend_from_slice(&interp_bytes);
        f.extend_from_slice(&strtab);
        f.extend_from_slice(&dynamic);
        f
    }

    #[test]
    fn reads_needed_interp_and_runpath() {
        let elf = synthetic(
            &["libfoo.so.1", "libc.so.6"],
            Some("/lib64/ld-linux-x86-64.so.2"),
        );
        let d = dynamic(&elf).unwrap();
        assert_eq!(d.needed, ["libfoo.so.1", "libc.so.6"]);
        assert_eq!(d.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(d.runpath, ["/opt/a", "/opt/b"]);
        let lib = dynamic(&synthetic(&["libc.so.6"], None)).unwrap();
        assert_eq!(lib.interp, None);
    }

    #[test]
    fn reads_a_real_program() {
        // Any dynamically linked program of the host will do.
        let data = std::fs::read("/bin/sh").unwrap();
        let d = dynamic(&data).unwrap();
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
        assert!(d.interp.is_some());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert_eq!(dynamic(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
        let elf = synthetic(&["libfoo.so.1"], Some("/ld"));
        for len in [20, 70, elf.len() - 20] {
            assert!(dynamic(&elf[..len]).is_err(), "truncated at {len}");
        }
    }
}
