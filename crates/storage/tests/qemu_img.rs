//! qcow2 interoperability with QEMU's `qemu-img` (Debian's qemu-utils): images it makes open
//! here, images written here pass `qemu-img check`, unsupported features are named. Each test
//! prints `SKIPPED (qemu-img not installed)` and passes when there is no qemu-img.

mod common;

use std::path::Path;

use common::{have_qemu_img, pattern, qemu_img, sha256_file, Rng, TempDir};
use storage::{DiskImage, Format, StorageError};

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

#[test]
fn qemu_img_images_read_and_our_writes_pass_qemu_img_check() {
    if !have_qemu_img("qemu_img_images_read_and_our_writes_pass_qemu_img_check") {
        return;
    }
    let dir = TempDir::new("q-qemu");
    let src = dir.join("src.raw");
    let mut model = pattern(16 * MIB as usize, 0x33);
    model[4 * MIB as usize..6 * MIB as usize].fill(0);
    std::fs::write(&src, &model).unwrap();
    let img = dir.join("img.qcow2");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &s(&src), &s(&img)]);
    // And a compressed copy (deflate clusters).
    let comp = dir.join("comp.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s(&src),
        &s(&comp),
    ]);

    for path in [&img, &comp] {
        let disk = open(path, false);
        assert_eq!(read_all(disk.as_ref()), model, "{}", path.display());
        // Random writes, zeroes and discards, mirrored into a model.
        let mut model = model.clone();
        let mut rng = Rng::new(42);
        for _ in 0..200 {
            let len = 1 + rng.below(3 * 65536);
            let off = rng.below(16 * MIB - len);
            let (o, l) = (off as usize, len as usize);
            match rng.below(4) {
                0 | 1 => {
                    let data = pattern(l, rng.below(256) as u8);
                    disk.write_at(&data, off).unwrap();
                    model[o..o + l].copy_from_slice(&data);
                }
                2 => {
                    disk.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                    model[o..o + l].fill(0);
                }
                _ => {
                    // Whole clusters, so the model knows they read as zero.
                    let o = off & !65535;
                    let l = 65536 * (1 + rng.below(3));
                    if o + l <= 16 * MIB {
                        disk.write_zeroes(o, l, true).unwrap();
                        model[o as usize..(o + l) as usize].fill(0);
                    }
                }
            }
        }
        assert!(read_all(disk.as_ref()) == model);
        disk.flush().unwrap();
        // While still open: QEMU sees what a flush made durable.
        let out = dir.join("out.raw");
        let _ = std::fs::remove_file(&out);
        qemu_img(&["convert", "-U", "-O", "raw", &s(path), &s(&out)]);
        assert!(std::fs::read(&out).unwrap() == model, "{}", path.display());
        drop(disk);
        qemu_img(&["check", &s(path)]);
    }
}

#[test]
fn qemu_img_overlays_and_created_images_interoperate() {
    if !have_qemu_img("qemu_img_overlays_and_created_images_interoperate") {
        return;
    }
    let dir = TempDir::new("q-qemu-ov");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let base = dir.join("base.qcow2");
    qemu_img(&["create", "-f", "qcow2", &s(&base), "8M"]);
    {
        let d = open(&base, false);
        d.write_at(&pattern(8 * MIB as usize, 1), 0).unwrap();
    }
    let base_sum = sha256_file(&base);
    let ov = dir.join("ov.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &s(&ov),
    ]);
    {
        let d = open(&ov, false);
        assert_eq!(read_all(d.as_ref()), pattern(8 * MIB as usize, 1));
        d.write_at(&[0xee; 65536], MIB).unwrap();
    }
    assert_eq!(sha256_file(&base), base_sum);
    qemu_img(&["check", &s(&ov)]);

    // Our overlay, as QEMU sees it.
    let ours = dir.join("ours.qcow2");
    storage::create_qcow2(&ours, 8 * MIB, Some(Path::new("base.qcow2"))).unwrap();
    let info = qemu_img(&["info", &s(&ours)]);
    assert!(info.contains("backing file: base.qcow2"), "{info}");
    assert!(info.contains("backing file format: qcow2"), "{info}");
    assert!(info.contains("virtual size: 8 MiB"), "{info}");
    qemu_img(&["check", &s(&ours)]);
}

#[test]
fn qemu_img_images_of_every_refcount_width_and_cluster_size_open_writable() {
    if !have_qemu_img("qemu_img_images_of_every_refcount_width_and_cluster_size_open_writable") {
        return;
    }
    let dir = TempDir::new("q-qemu-widths");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut cases: Vec<(u32, u32)> = [1, 2, 4, 8, 16, 32, 64]
        .iter()
        .map(|b| (*b, 65536))
        .collect();
    cases.extend([(16, 512), (16, 2 << 20), (1, 512)]);
    for (bits, cluster) in cases {
        let p = dir.join(format!("r{bits}-c{cluster}.qcow2"));
        let opts = format!("refcount_bits={bits},cluster_size={cluster}");
        qemu_img(&["create", "-f", "qcow2", "-o", &opts, &s(&p), "64M"]);
        for round in 0..2u8 {
            let disk = open(&p, false);
            assert_eq!(disk.discard_alignment(), u64::from(cluster));
            let data = pattern(3 * cluster as usize + 1000, round);
            disk.write_at(&data, 5 * MIB + 17).unwrap();
            let mut buf = vec![0u8; data.len()];
            disk.read_at(&mut buf, 5 * MIB + 17).unwrap();
            assert_eq!(buf, data);
        }
        qemu_img(&["check", &s(&p)]);
    }
    // v2 (compat=0.10): 16-bit refcounts, no zero clusters: write-zeroes falls back to writing.
    let v2 = dir.join("v2.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-o", "compat=0.10", &s(&v2), "8M"]);
    let disk = open(&v2, false);
    assert!(
        disk.describe().starts_with("qcow2 v2"),
        "{}",
        disk.describe()
    );
    disk.write_at(&[5u8; 200_000], 0).unwrap();
    disk.write_zeroes(1000, 100_000, true).unwrap();
    disk.discard(0, 65536).unwrap();
    let mut buf = vec![1u8; 100_000];
    disk.read_at(&mut buf, 1000).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    drop(disk);
    qemu_img(&["check", &s(&v2)]);
}

#[test]
fn qemu_img_unsupported_features_are_named() {
    if !have_qemu_img("qemu_img_unsupported_features_are_named") {
        return;
    }
    let dir = TempDir::new("q-qemu-unsup");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let luks = dir.join("luks.qcow2");
    // Creating a LUKS image times PBKDF2 on the CPU; on a loaded machine
    // qemu-img sometimes measures nothing and gives up ("Unable to get
    // accurate CPU usage"): try a few times.
    let luks_args = [
        "create",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=keel",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        &s(&luks),
        "1M",
    ];
    let made_luks = (0..5).any(|_| {
        std::process::Command::new("qemu-img")
            .args(luks_args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !made_luks {
        qemu_img(&luks_args);
    }
    let data = dir.join("data.qcow2");
    let data_raw = dir.join("data.raw");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(&data_raw)),
        &s(&data),
        "1M",
    ]);
    let l2 = dir.join("l2.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        &s(&l2),
        "1M",
    ]);
    let mut cases = vec![
        (luks, "LUKS"),
        (data, "external data file"),
        (l2, "extended L2"),
    ];
    let zstd = dir.join("zstd.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args([
            "create",
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd",
            &s(&zstd),
            "1M",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if made {
        cases.push((zstd, "compression type"));
    }
    for (p, feature) in cases {
        match storage::open(&p, Format::Auto, true) {
            Err(StorageError::Unsupported { feature: f, .. }) => {
                assert!(f.contains(feature), "{f}")
            }
            other => panic!("{}: {other:?}", p.display()),
        }
    }
}
