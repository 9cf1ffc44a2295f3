//! qcow2 images: created by imago (`create_qcow2`) and by `qemu-img` when installed; overlays
//! over raw and qcow2 bases; errors for broken, unsupported and missing things.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use std::path::Path;

use common::{have_qemu_img, pattern, qemu_img, sha256_file, Rng, TempDir};
use storage::{DiskImage, Format, StorageError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MIB: u64 = 1 << 20;

fn open(path: &Path, read_only: bool) -> Box<dyn DiskImage> {
    storage::open(path, Format::Auto, read_only).unwrap()
}

/// Reads the whole disk.
fn read_all(disk: &dyn DiskImage) -> Vec<u8> {
    let mut buf = vec![0u8; disk.size() as usize];
    disk.read_at(&mut buf, 0).unwrap();
    buf
}

/// Patches bytes of a file in place.
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// The error's whole chain, for assertions on messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn created_image_round_trips_across_reopen() {
    let dir = TempDir::new("q-rt");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 64 * MIB, None).unwrap();
    let data = pattern(300_000, 4);
    {
        let disk = open(&path, false);
        assert_eq!(disk.format(), Format::Qcow2);
        assert_eq!(disk.size(), 64 * MIB);
        assert_eq!(disk.discard_alignment(), 65536);
        assert!(
            disk.describe().starts_with("qcow2 v3 "),
            "{}",
            disk.describe()
        );
        disk.write_at(&data, 1_000_001).unwrap();
        disk.write_at(&data[..4096], 64 * MIB - 4096).unwrap();
        disk.flush().unwrap();
    }
    // The file is small: only what was written is allocated.
    assert!(std::fs::metadata(&path).unwrap().len() < 4 * MIB);
    let disk = open(&path, true);
    let mut buf = vec![0u8; data.len()];
    disk.read_at(&mut buf, 1_000_001).unwrap();
    assert_eq!(buf, data);
    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 64 * MIB - 4096).unwrap();
    assert_eq!(buf, data[..4096]);
    disk.read_at(&mut buf, 8 * MIB).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
}

#[test]
fn read_only_qcow2_refuses_writes_and_stays_unchanged() {
    let dir = TempDir::new("q-ro");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 4 * MIB, None).unwrap();
    open(&path, false).write_at(&[9; 4096], 0).unwrap();
    let before = sha256_file(&path);
    let disk = open(&path, true);
    for e in [
        disk.write_at(&[1; 512], 0).unwrap_err(),
        disk.discard(0, 65536).unwrap_err(),
        disk.write_zeroes(0, 4096, true).unwrap_err(),
    ] {
        assert!(matches!(e, StorageError::ReadOnly), "{e}");
    }
    disk.flush().unwrap();
    drop(disk);
    assert_eq!(sha256_file(&path), before);
}

#[test]
fn qcow2_requests_outside_the_disk_are_refused() {
    let dir = TempDir::new("q-range");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 4 * MIB, None).unwrap();
    let disk = open(&path, false);
    let mut buf = [0u8; 512];
    for offset in [4 * MIB, 4 * MIB - 511, u64::MAX - 10] {
        let e = disk.read_at(&mut buf, offset).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        let e = disk.write_at(&buf, offset).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        let e = disk.discard(offset, 512).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
        let e = disk.write_zeroes(offset, 512, false).unwrap_err();
        assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
    }
    assert_eq!(disk.size(), 4 * MIB);
}

#[test]
fn overlay_reads_the_base_and_never_writes_it() {
    for base_format in [Format::Raw, Format::Qcow2] {
        let dir = TempDir::new("q-overlay");
        let base_data = pattern(8 * MIB as usize, 0x5a);
        let base = match base_format {
            Format::Raw => {
                let p = dir.join("base.raw");
                std::fs::write(&p, &base_data).unwrap();
                p
            }
            _ => {
                let p = dir.join("base.qcow2");
                storage::create_qcow2(&p, 8 * MIB, None).unwrap();
                open(&p, false).write_at(&base_data, 0).unwrap();
                p
            }
        };
        let base_sum = sha256_file(&base);
        let overlay = dir.join("overlay.qcow2");
        // Relative backing name: resolved against the overlay's directory.
        let name = base.file_name().unwrap();
        storage::create_qcow2(&overlay, 8 * MIB, Some(Path::new(name))).unwrap();

        let disk = open(&overlay, false);
        assert!(disk.describe().contains("backing"), "{}", disk.describe());
        assert_eq!(read_all(disk.as_ref()), base_data, "{base_format}");
        let new = pattern(200_000, 0x11);
        disk.write_at(&new, 3 * MIB + 7).unwrap();
        disk.write_zeroes(6 * MIB, 2 * 65536, false).unwrap();
        disk.write_zeroes(5 * MIB, 65536, true).unwrap();
        disk.discard(7 * MIB, 65536).unwrap();
        disk.flush().unwrap();
        drop(disk);

        assert_eq!(sha256_file(&base), base_sum, "{base_format} base changed");
        let disk = open(&overlay, true);
        let mut want = base_data.clone();
        let at = (3 * MIB + 7) as usize;
        want[at..at + new.len()].copy_from_slice(&new);
        want[6 * MIB as usize..(6 * MIB + 2 * 65536) as usize].fill(0);
        want[5 * MIB as usize..(5 * MIB + 65536) as usize].fill(0);
        want[7 * MIB as usize..(7 * MIB + 65536) as usize].fill(0);
        assert!(
            read_all(disk.as_ref()) == want,
            "{base_format} overlay contents"
        );
    }
}

#[test]
fn threads_allocate_discard_and_read_one_qcow2_concurrently() {
    let dir = TempDir::new("q-threads");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 64 * MIB, None).unwrap();
    let disk: std::sync::Arc<dyn DiskImage> = std::sync::Arc::from(open(&path, false));
    // Thread t owns every 4th 64 KiB cluster starting at t; blocks land in fresh clusters.
    let block = |t: u64, i: u64| (i * 4 + t) * 65536 + (i % 16) * 4096;
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let disk = std::sync::Arc::clone(&disk);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    disk.write_at(&pattern(4096, (t * 7 + i) as u8), block(t, i))
                        .unwrap();
                    if i % 50 == 49 {
                        // Discards take the image exclusively; other threads wait.
                        disk.discard(block(t, i - 1) & !65535, 65536).unwrap();
                        disk.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..4u64 {
        for i in 0..200u64 {
            let mut buf = vec![0u8; 4096];
            disk.read_at(&mut buf, block(t, i)).unwrap();
            let discarded = i % 50 == 48;
            let want = if discarded {
                vec![0u8; 4096]
            } else {
                pattern(4096, (t * 7 + i) as u8)
            };
            assert!(buf == want, "thread {t} block {i}");
        }
    }
    drop(disk);
    if have_qemu_img("threads_allocate_discard_and_read_one_qcow2_concurrently (qemu-img check)") {
        qemu_img(&["check", path.to_str().unwrap()]);
    }
}

#[test]
fn a_base_in_use_as_backing_cannot_be_opened_writable() {
    let dir = TempDir::new("q-baselock");
    let base = dir.join("base.qcow2");
    storage::create_qcow2(&base, 4 * MIB, None).unwrap();
    let overlay = dir.join("ov.qcow2");
    storage::create_qcow2(&overlay, 4 * MIB, Some(&base)).unwrap();
    let _disk = open(&overlay, false);
    let e = storage::open(&base, Format::Qcow2, false).unwrap_err();
    assert!(matches!(e, StorageError::Locked { .. }), "{e}");
    // A second overlay over the same base is fine.
    let overlay2 = dir.join("ov2.qcow2");
    storage::create_qcow2(&overlay2, 4 * MIB, Some(&base)).unwrap();
    let _disk2 = open(&overlay2, false);
}

#[test]
fn missing_backing_file_is_named() {
    let dir = TempDir::new("q-nobacking");
    let base = dir.join("base.qcow2");
    storage::create_qcow2(&base, 4 * MIB, None).unwrap();
    let overlay = dir.join("ov.qcow2");
    storage::create_qcow2(&overlay, 4 * MIB, Some(Path::new("base.qcow2"))).unwrap();
    std::fs::remove_file(&base).unwrap();
    let e = storage::open(&overlay, Format::Auto, false).unwrap_err();
    let msg = chain(&e);
    match &e {
        StorageError::Backing { image, backing, .. } => {
            assert!(image.ends_with("ov.qcow2"), "{msg}");
            assert_eq!(backing, &dir.join("base.qcow2"), "{msg}");
        }
        other => panic!("{other}: {msg}"),
    }
    assert!(
        msg.contains("base.qcow2") && msg.contains("No such file"),
        "{msg}"
    );
    // Creating an overlay over a missing file fails too, and leaves nothing behind.
    let e = storage::create_qcow2(&dir.join("x.qcow2"), MIB, Some(&base)).unwrap_err();
    assert!(matches!(e, StorageError::Backing { .. }), "{e}");
    assert!(!dir.join("x.qcow2").exists());
}

#[test]
fn backing_loops_and_deep_chains_are_refused() {
    let dir = TempDir::new("q-loop");
    // a -> b -> a: make b over a, c over b, then put c in a's place.
    let a = dir.join("a.qcow2");
    storage::create_qcow2(&a, MIB, None).unwrap();
    storage::create_qcow2(&dir.join("b.qcow2"), MIB, Some(Path::new("a.qcow2"))).unwrap();
    storage::create_qcow2(&dir.join("c.qcow2"), MIB, Some(Path::new("b.qcow2"))).unwrap();
    std::fs::rename(dir.join("c.qcow2"), &a).unwrap();
    let e = storage::open(&a, Format::Auto, true).unwrap_err();
    assert!(chain(&e).contains("loops or is too deep"), "{}", chain(&e));

    // A chain of MAX_BACKING_DEPTH backing files opens; one more does not.
    let depth = storage::MAX_BACKING_DEPTH;
    storage::create_qcow2(&dir.join("l0.qcow2"), MIB, None).unwrap();
    for i in 1..=depth + 1 {
        let below = format!("l{}.qcow2", i - 1);
        storage::create_qcow2(
            &dir.join(format!("l{i}.qcow2")),
            MIB,
            Some(Path::new(&below)),
        )
        .unwrap();
    }
    let ok = open(&dir.join(format!("l{depth}.qcow2")), true);
    assert_eq!(ok.size(), MIB);
    let e = storage::open(
        &dir.join(format!("l{}.qcow2", depth + 1)),
        Format::Auto,
        true,
    )
    .unwrap_err();
    assert!(chain(&e).contains("loops or is too deep"), "{}", chain(&e));
}

#[test]
fn broken_headers_are_errors_not_panics() {
    let dir = TempDir::new("q-broken");
    let good = dir.join("good.qcow2");
    storage::create_qcow2(&good, 16 * MIB, None).unwrap();
    open(&good, false)
        .write_at(&pattern(MIB as usize, 2), 0)
        .unwrap();
    let image = std::fs::read(&good).unwrap();
    let case = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let p = dir.join(name);
        let mut bytes = image.clone();
        edit(&mut bytes);
        std::fs::write(&p, &bytes).unwrap();
        p
    };

    let truncated = case("trunc.qcow2", &|b| b.truncate(100));
    let e = storage::open(&truncated, Format::Auto, false).unwrap_err();
    assert!(
        matches!(e, StorageError::InvalidQcow2 { .. }),
        "{}",
        chain(&e)
    );

    let flipped = case("magic.qcow2", &|b| b[0] ^= 0xff);
    let e = storage::open(&flipped, Format::Qcow2, false).unwrap_err();
    assert!(matches!(e, StorageError::NotQcow2 { .. }), "{e}");
    // Without the magic, auto-probing sees a raw disk: that is what the file now is.
    if image.len().is_multiple_of(512) {
        assert_eq!(open(&flipped, true).format(), Format::Raw);
    }

    for (name, offset, bytes) in [
        ("l1size.qcow2", 36u64, 0xffff_ffffu32.to_be_bytes().to_vec()),
        ("l1big.qcow2", 36, 0x0040_0000u32.to_be_bytes().to_vec()),
        (
            "l1off.qcow2",
            40,
            0x7fff_ffff_ffff_0000u64.to_be_bytes().to_vec(),
        ),
        ("l1odd.qcow2", 40, 0x1234u64.to_be_bytes().to_vec()),
        ("rt.qcow2", 48, 0xdead_0000_0000u64.to_be_bytes().to_vec()),
        (
            "rtclusters.qcow2",
            56,
            0xffff_ffffu32.to_be_bytes().to_vec(),
        ),
        ("clusterbits.qcow2", 20, 31u32.to_be_bytes().to_vec()),
        ("backingname.qcow2", 8, 0xfff0u64.to_be_bytes().to_vec()),
        ("hdrlen.qcow2", 100, 0xffff_ffffu32.to_be_bytes().to_vec()),
        ("size.qcow2", 24, u64::MAX.to_be_bytes().to_vec()),
    ] {
        let p = case(name, &|b| {
            b[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes)
        });
        // Opening may fail (it should for most); if it opens, I/O must not panic either.
        match storage::open(&p, Format::Auto, false) {
            Err(e) => println!("{name}: {}", chain(&e)),
            Ok(disk) => {
                let mut buf = vec![0u8; 65536];
                let r = disk.read_at(&mut buf, 0);
                let w = disk.write_at(&buf, 0);
                println!(
                    "{name}: opened, size {}, read {r:?}, write {w:?}",
                    disk.size()
                );
            }
        }
    }
    let refused = [
        "l1size.qcow2",
        "l1big.qcow2",
        "l1off.qcow2",
        "l1odd.qcow2",
        "rt.qcow2",
        "rtclusters.qcow2",
        "clusterbits.qcow2",
        "hdrlen.qcow2",
        "size.qcow2",
    ];
    for name in refused {
        let e = storage::open(&dir.join(name), Format::Auto, false).unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidQcow2 { .. }),
            "{name}: {}",
            chain(&e)
        );
    }
}

#[test]
fn refcounts_that_would_free_the_header_are_refused_for_writing() {
    let dir = TempDir::new("q-refcount");
    let make = |name: &str| {
        let p = dir.join(name);
        storage::create_qcow2(&p, 16 * MIB, None).unwrap();
        open(&p, false)
            .write_at(&pattern(MIB as usize, 3), 0)
            .unwrap();
        let mut h = [0u8; 64];
        std::fs::File::open(&p)
            .unwrap()
            .read_exact_at(&mut h, 0)
            .unwrap();
        let rt = u64::from_be_bytes(h[48..56].try_into().unwrap());
        let mut e = [0u8; 8];
        std::fs::File::open(&p)
            .unwrap()
            .read_exact_at(&mut e, rt)
            .unwrap();
        (p, rt, u64::from_be_bytes(e))
    };
    // Refcount block 0 moved past the end of the file: imago would read it as zeroes, see
    // cluster 0 as free and put guest data over the header.
    let (far, rt, _) = make("far.qcow2");
    poke(&far, rt, &0x10_0000_0000u64.to_be_bytes());
    // Refcount block 0 zeroed: the same, inside the file.
    let (zeroed, _, block) = make("zeroed.qcow2");
    poke(&zeroed, block, &[0u8; 65536]);
    for p in [&far, &zeroed] {
        let before = sha256_file(p);
        let e = storage::open(p, Format::Auto, false).unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidQcow2 { .. }),
            "{}",
            chain(&e)
        );
        // Read-only use allocates nothing, so it stays possible.
        let disk = open(p, true);
        let mut buf = vec![0u8; 4096];
        disk.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, pattern(MIB as usize, 3)[..4096]);
        drop(disk);
        assert_eq!(sha256_file(p), before);
    }
}

#[test]
fn random_corruption_never_panics() {
    let dir = TempDir::new("q-fuzz");
    let good = dir.join("good.qcow2");
    storage::create_qcow2(&good, 8 * MIB, None).unwrap();
    {
        let d = open(&good, false);
        for i in 0..8 {
            d.write_at(&pattern(65536, i), i as u64 * MIB).unwrap();
        }
    }
    let image = std::fs::read(&good).unwrap();
    let mut rng = Rng::new(0x6b65656c);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..300 {
        let mut bytes = image.clone();
        // Hit the metadata clusters (header, refcount table and block, L1, L2) mostly.
        let span = (4 * 65536).min(bytes.len() as u64);
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(span) as usize;
            bytes[at] ^= 1 << rng.below(8);
            if rng.below(3) == 0 {
                bytes[at] = 0xff;
            }
        }
        let p = dir.join(format!("f{round}.qcow2"));
        std::fs::write(&p, &bytes).unwrap();
        match storage::open(&p, Format::Qcow2, false) {
            Err(_) => refused += 1,
            Ok(d) => {
                opened += 1;
                let mut buf = vec![0u8; 65536];
                for i in 0..8 {
                    let _ = d.read_at(&mut buf, i * MIB);
                }
                let _ = d.write_at(&buf, rng.below(8) * MIB);
                let _ = d.write_zeroes(2 * MIB, 65536, true);
                let _ = d.discard(3 * MIB, 65536);
                let _ = d.flush();
            }
        }
        std::fs::remove_file(&p).unwrap();
    }
    println!("corrupted images: {opened} opened, {refused} refused");
    assert_eq!(opened + refused, 300);
}

#[test]
fn unsupported_features_are_named_without_qemu_img() {
    let dir = TempDir::new("q-unsup");
    let cases: [(&str, u64, Vec<u8>, &str); 4] = [
        (
            "luks.qcow2",
            32,
            2u32.to_be_bytes().to_vec(),
            "LUKS encryption",
        ),
        (
            "aes.qcow2",
            32,
            1u32.to_be_bytes().to_vec(),
            "AES encryption",
        ),
        (
            "datafile.qcow2",
            72,
            4u64.to_be_bytes().to_vec(),
            "external data file",
        ),
        ("dirty.qcow2", 72, 1u64.to_be_bytes().to_vec(), "dirty"),
    ];
    for (name, offset, bytes, feature) in cases {
        let p = dir.join(name);
        storage::create_qcow2(&p, MIB, None).unwrap();
        poke(&p, offset, &bytes);
        match storage::open(&p, Format::Auto, true) {
            Err(StorageError::Unsupported { feature: f, .. }) => {
                assert!(f.contains(feature), "{name}: {f}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn create_qcow2_refuses_bad_sizes_and_existing_files() {
    let dir = TempDir::new("q-create");
    let p = dir.join("d.qcow2");
    for size in [0, 1000] {
        let e = storage::create_qcow2(&p, size, None).unwrap_err();
        assert!(matches!(e, StorageError::CreateSize { .. }), "{e}");
    }
    storage::create_qcow2(&p, MIB, None).unwrap();
    let sum = sha256_file(&p);
    let e = storage::create_qcow2(&p, MIB, None).unwrap_err();
    assert!(matches!(e, StorageError::Create { .. }), "{e}");
    assert_eq!(sha256_file(&p), sum);
}

#[test]
fn vectored_io_on_qcow2() {
    let dir = TempDir::new("q-vec");
    let path = dir.join("d.qcow2");
    storage::create_qcow2(&path, 4 * MIB, None).unwrap();
    let disk = open(&path, false);
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let data = pattern(65536 + 4096, 8);
    mem.write_slice(&data[..4096], GuestAddress(0x3000))
        .unwrap();
    mem.write_slice(&data[4096..], GuestAddress(0x40000))
        .unwrap();
    let slices = [
        mem.get_slice(GuestAddress(0x3000), 4096).unwrap(),
        mem.get_slice(GuestAddress(0x40000), 65536).unwrap(),
    ];
    // Straddles a cluster boundary.
    disk.write_vectored_at(&slices, 65536 - 512).unwrap();
    let mut buf = vec![0u8; data.len()];
    disk.read_at(&mut buf, 65536 - 512).unwrap();
    assert_eq!(buf, data);
    mem.write_slice(&vec![0u8; 4096], GuestAddress(0x3000))
        .unwrap();
    mem.write_slice(&vec![0u8; 65536], GuestAddress(0x40000))
        .unwrap();
    disk.read_vectored_at(&slices, 65536 - 512).unwrap();
    let mut got = vec![0u8; data.len()];
    mem.read_slice(&mut got[..4096], GuestAddress(0x3000))
        .unwrap();
    mem.read_slice(&mut got[4096..], GuestAddress(0x40000))
        .unwrap();
    assert_eq!(got, data);
    let e = disk.read_vectored_at(&slices, 4 * MIB - 4096).unwrap_err();
    assert!(matches!(e, StorageError::OutOfRange { .. }), "{e}");
}
