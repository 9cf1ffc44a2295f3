//! Kernel images: the ELF `vmlinux` inside a bzImage, and the PVH entry note.

use std::io::Read;

use anyhow::{bail, ensure, Context, Result};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    let s = b.get(off..off + 2).context("Truncated image")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b.get(off..off + 4).context("Truncated image")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64> {
    let lo = u32_at(b, off)? as u64;
    let hi = u32_at(b, off + 4)? as u64;
    Ok(lo | (hi << 32))
}

/// The compressed payload of a bzImage (what `payload_offset` and
/// `payload_length` in the setup header name).
pub fn bzimage_payload(bz: &[u8]) -> Result<&[u8]> {
    ensure!(
        bz.get(0x202..0x206) == Some(b"HdrS"),
        "Not a bzImage: no HdrS setup header"
    );
    let version = u16_at(bz, 0x206)?;
    ensure!(
        version >= 0x208,
        "bzImage boot protocol {version:#x} has no payload fields"
    );
    let setup_sects = match bz.get(0x1f1).copied().context("Truncated image")? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(bz, 0x248)? as usize;
    let len = u32_at(bz, 0x24c)? as usize;
    bz.get(start..start + len)
        .context("bzImage payload lies outside the file")
}

/// Extracts the ELF `vmlinux` from a bzImage (LZ4 legacy frames, as
/// Debian's kernels use, or gzip).
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>> {
    let payload = bzimage_payload(bz)?;
    let elf = if u32_at(payload, 0)? == LZ4_LEGACY_MAGIC {
        decode_lz4_legacy(payload)?
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .context("Decompressing the gzip payload")?;
        out
    } else {
        bail!("Unsupported bzImage payload compression (only LZ4 and gzip are handled)");
    };
    ensure!(
        elf.starts_with(b"\x7fELF"),
        "The bzImage payload is not an ELF image"
    );
    Ok(elf)
}

/// Decodes an LZ4 "legacy" stream (`lz4 -l`), optionally followed by the
/// 4-byte uncompressed size that the kernel build appends.
pub fn decode_lz4_legacy(data: &[u8]) -> Result<Vec<u8>> {
    ensure!(
        u32_at(data, 0)? == LZ4_LEGACY_MAGIC,
        "Not an LZ4 legacy stream"
    );
    let mut pos = 4;
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while pos + 4 <= data.len() {
        let size = u32_at(data, pos)? as usize;
        if size == LZ4_LEGACY_MAGIC as usize {
            pos += 4;
            continue;
        }
        if pos + 4 == data.len() {
            // The appended uncompressed size.
            ensure!(
                size == out.len(),
                "LZ4 stream decoded to {} bytes, expected {size}",
                out.len()
            );
            break;
        }
        let chunk = data
            .get(pos + 4..pos + 4 + size)
            .context("Truncated LZ4 block")?;
        let n = lz4_flex::block::decompress_into(chunk, &mut block)
            .map_err(|e| anyhow::anyhow!("Corrupt LZ4 block at offset {pos}: {e}"))?;
        out.extend_from_slice(&block[..n]);
        pos += 4 + size;
    }
    Ok(out)
}

/// The PVH entry address from an ELF image's `Xen` note of type
/// `XEN_ELFNOTE_PHYS32_ENTRY`, if it has one (ELF32 or ELF64).
pub fn pvh_entry(elf: &[u8]) -> Result<Option<u32>> {
    ensure!(elf.starts_with(b"\x7fELF"), "Not an ELF image");
    let class64 = match elf.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => bail!("Unknown ELF class"),
    };
    let (phoff, phentsize, phnum) = if class64 {
        (
            u64_at(elf, 0x20)? as usize,
            u16_at(elf, 0x36)?,
            u16_at(elf, 0x38)?,
        )
    } else {
        (
            u32_at(elf, 0x1c)? as usize,
            u16_at(elf, 0x2a)?,
            u16_at(elf, 0x2c)?,
        )
    };
    for i in 0..phnum as usize {
        let ph = phoff + i * phentsize as usize;
        if u32_at(elf, ph)? != PT_NOTE {
            continue;
        }
        let (offset, size) = if class64 {
            (
                u64_at(elf, ph + 8)? as usize,
                u64_at(elf, ph + 32)? as usize,
            )
        } else {
            (
                u32_at(elf, ph + 4)? as usize,
                u32_at(elf, ph + 16)? as usize,
            )
        };
        let notes = elf
            .get(offset..offset + size)
            .context("ELF note segment lies outside the file")?;
        if let Some(entry) = find_xen_entry(notes)? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn find_xen_entry(notes: &[u8]) -> Result<Option<u32>> {
    let mut pos = 0;
    while pos + 12 <= notes.len() {
        let namesz = u32_at(notes, pos)? as usize;
        let descsz = u32_at(notes, pos + 4)? as usize;
        let kind = u32_at(notes, pos + 8)?;
        let name_start = pos + 12;
        let desc_start = name_start + namesz.div_ceil(4) * 4;
        let name = notes
            .get(name_start..name_start + namesz)
            .context("Truncated note")?;
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY && descsz >= 4 {
            return Ok(Some(u32_at(notes, desc_start)?));
        }
        pos = desc_start + descsz.div_ceil(4) * 4;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE holding a GNU note then the Xen note.
    fn elf_with_notes(entry: Option<u32>) -> Vec<u8> {
        let mut notes = Vec::new();
        // A GNU build-id note (name "GNU\0", type 3, 4 bytes of desc).
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0\x01\x02\x03\x04");
        if let Some(entry) = entry {
            notes.extend_from_slice(&4u32.to_le_bytes());
            notes.extend_from_slice(&4u32.to_le_bytes());
            notes.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            notes.extend_from_slice(b"Xen\0");
            notes.extend_from_slice(&entry.to_le_bytes());
        }
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let ph = 0x40;
        elf[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&(0x78u64).to_le_bytes());
        elf[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf.extend_from_slice(&notes);
        elf
    }

    #[test]
    fn finds_the_pvh_entry_note() {
        assert_eq!(
            pvh_entry(&elf_with_notes(Some(0x10_0000))).unwrap(),
            Some(0x10_0000)
        );
        assert_eq!(pvh_entry(&elf_with_notes(None)).unwrap(), None);
        assert!(pvh_entry(b"not an elf").is_err());
    }

    #[test]
    fn truncated_elf_is_an_error_not_a_panic() {
        let elf = elf_with_notes(Some(1));
        for cut in [5, 0x30, 0x50, elf.len() - 3] {
            let _ = pvh_entry(&elf[..cut]);
        }
    }

    fn lz4_legacy(data: &[u8], append_size: bool) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        if append_size {
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        out
    }

    #[test]
    fn decodes_lz4_legacy_with_and_without_size() {
        let data: Vec<u8> = (0..(9 << 20)).map(|i| (i % 251) as u8).collect();
        assert_eq!(decode_lz4_legacy(&lz4_legacy(&data, true)).unwrap(), data);
        assert_eq!(decode_lz4_legacy(&lz4_legacy(&data, false)).unwrap(), data);
        let mut bad = lz4_legacy(&data, true);
        bad.truncate(bad.len() - 100);
        assert!(decode_lz4_legacy(&bad).is_err());
    }

    #[test]
    fn extracts_the_elf_from_a_synthetic_bzimage() {
        let elf = elf_with_notes(Some(0x1234));
        let payload = lz4_legacy(&elf, true);
        let mut bz = vec![0u8; 5 * 512];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bz.extend_from_slice(&[0u8; 16]);
        bz.extend_from_slice(&payload);
        let out = extract_vmlinux(&bz).unwrap();
        assert_eq!(out, elf);
        assert_eq!(pvh_entry(&out).unwrap(), Some(0x1234));
        assert!(extract_vmlinux(b"plain text, not a kernel").is_err());
    }
}
