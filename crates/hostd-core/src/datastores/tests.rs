use super::*;
use crate::fsutil::TestDir;
use std::os::unix::fs::symlink;

struct Ds {
    _dir: TestDir,
    root: PathBuf,
    outside: PathBuf,
}

fn ds() -> Ds {
    let dir = TestDir::new("ds");
    let root = dir.path().join("datastore1");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("iso")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    fs::write(root.join("iso/a.iso"), b"iso!").unwrap();
    let root = fs::canonicalize(&root).unwrap();
    Ds {
        _dir: dir,
        root,
        outside,
    }
}

#[test]
fn paths_are_relative_and_normalized() {
    assert_eq!(parse_path("").unwrap(), Vec::<&str>::new());
    assert_eq!(parse_path("./a//b/./c/").unwrap(), ["a", "b", "c"]);
    assert!(matches!(
        parse_path("/etc/passwd"),
        Err(PathError::Absolute(_))
    ));
    assert!(matches!(parse_path("../x"), Err(PathError::DotDot(_))));
    assert!(matches!(parse_path("a/../../x"), Err(PathError::DotDot(_))));
    assert!(matches!(parse_path("a\0b"), Err(PathError::Control)));
    assert!(matches!(
        parse_path(&"a/".repeat(3000)),
        Err(PathError::TooLong)
    ));
}

#[test]
fn browse_lists_and_refuses_traversal() {
    let d = ds();
    let root_list = browse(&d.root, "").unwrap();
    assert_eq!(root_list.len(), 1);
    assert_eq!(
        (root_list[0].name.as_str(), root_list[0].kind),
        ("iso", FileKind::Dir)
    );
    let iso = browse(&d.root, "iso").unwrap();
    assert_eq!(iso[0].name, "a.iso");
    assert_eq!(iso[0].size_bytes, 4);
    assert!(iso[0].modified_ms > 0);
    for bad in ["../", "..", "/", "/etc", "iso/../.."] {
        let e = browse(&d.root, bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{bad}: {e}");
    }
    assert_eq!(
        browse(&d.root, "nope").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn symlinks_out_of_the_datastore_are_refused() {
    let d = ds();
    symlink(&d.outside, d.root.join("out")).unwrap();
    symlink(d.outside.join("secret"), d.root.join("secret-link")).unwrap();
    symlink(d.root.join("iso/a.iso"), d.root.join("inside-link")).unwrap();
    // Not listed, not browsable, not downloadable, not a place to write.
    let names: Vec<_> = browse(&d.root, "")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["inside-link", "iso"]);
    let e = browse(&d.root, "out").unwrap_err();
    assert!(e.message.contains("outside"), "{e}");
    assert!(open(&d.root, "secret-link").is_err());
    assert!(open(&d.root, "out/secret").is_err());
    assert!(upload(&d.root, "out/new", None, u64::MAX).is_err());
    assert!(mkdir(&d.root, "out/newdir").is_err());
    assert!(!d.outside.join("newdir").exists());
    // A link that stays inside works.
    let (_, len) = open(&d.root, "inside-link").unwrap();
    assert_eq!(len, 4);
    // Removing a link removes the link, never its target.
    remove(&d.root, "secret-link", &[]).unwrap();
    remove(&d.root, "out", &[]).unwrap();
    assert!(d.outside.join("secret").exists());
    assert!(remove(&d.root, "out/secret", &[]).is_err());
}

#[test]
fn download_opens_files_only() {
    let d = ds();
    let (mut f, len) = open(&d.root, "iso/a.iso").unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert_eq!((s.as_str(), len), ("iso!", 4));
    assert_eq!(
        open(&d.root, "iso").unwrap_err().kind,
        ErrorKind::BadRequest
    );
    assert_eq!(
        open(&d.root, "../outside/secret").unwrap_err().kind,
        ErrorKind::BadRequest
    );
}

#[test]
fn uploads_commit_atomically_and_clean_up() {
    let d = ds();
    let mut up = upload(&d.root, "iso/b.img", Some(6), u64::MAX).unwrap();
    up.write_all(b"abc").unwrap();
    // Invisible until committed.
    assert_eq!(browse(&d.root, "iso").unwrap().len(), 1);
    up.write_chunk(b"def").unwrap();
    assert_eq!(up.write_chunk(b"g").unwrap_err().kind, ErrorKind::TooLarge);
    up.commit().unwrap();
    assert_eq!(fs::read(d.root.join("iso/b.img")).unwrap(), b"abcdef");
    assert_eq!(
        fs::read_dir(d.root.join("iso")).unwrap().count(),
        2,
        "no temp left"
    );

    // Existing target, no space, short upload, dropped upload.
    assert_eq!(
        upload(&d.root, "iso/b.img", None, u64::MAX)
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );
    assert_eq!(
        upload(&d.root, "iso/c.img", Some(100), 10)
            .unwrap_err()
            .kind,
        ErrorKind::InsufficientSpace
    );
    let mut short = upload(&d.root, "iso/c.img", Some(10), u64::MAX).unwrap();
    short.write_chunk(b"12").unwrap();
    assert_eq!(short.commit().unwrap_err().kind, ErrorKind::BadRequest);
    let mut dropped = upload(&d.root, "iso/d.img", None, u64::MAX).unwrap();
    dropped.write_chunk(b"partial").unwrap();
    drop(dropped);
    assert_eq!(fs::read_dir(d.root.join("iso")).unwrap().count(), 2);
    // A file created meanwhile is not overwritten.
    let mut raced = upload(&d.root, "iso/e.img", None, u64::MAX).unwrap();
    raced.write_chunk(b"mine").unwrap();
    fs::write(d.root.join("iso/e.img"), b"theirs").unwrap();
    assert_eq!(raced.commit().unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(fs::read(d.root.join("iso/e.img")).unwrap(), b"theirs");
    // Upload to the root path or into a missing folder.
    assert_eq!(
        upload(&d.root, "", None, 1).unwrap_err().kind,
        ErrorKind::BadRequest
    );
    assert_eq!(
        upload(&d.root, "nope/x", None, 1).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn stale_uploads_are_removed() {
    let d = ds();
    fs::write(
        d.root.join("iso").join(format!("{UPLOAD_PREFIX}abc-x")),
        b"x",
    )
    .unwrap();
    fs::write(d.root.join(format!("{UPLOAD_PREFIX}abc-y")), b"x").unwrap();
    assert_eq!(remove_stale_uploads(&d.root), 2);
    assert_eq!(browse(&d.root, "iso").unwrap().len(), 1);
}

#[test]
fn mkdir_and_remove_protect_vm_folders() {
    let d = ds();
    mkdir(&d.root, "vms").unwrap();
    mkdir(&d.root, "vms/web1").unwrap();
    assert_eq!(mkdir(&d.root, "vms").unwrap_err().kind, ErrorKind::Conflict);
    fs::write(d.root.join("vms/web1/disk0.qcow2"), b"x").unwrap();
    let protected = vec![("web1".to_string(), d.root.join("vms/web1"))];
    for p in ["vms/web1/disk0.qcow2", "vms/web1", "vms"] {
        let e = remove(&d.root, p, &protected).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{p}");
        assert!(e.message.contains("web1"));
    }
    assert_eq!(
        remove(&d.root, "", &protected).unwrap_err().kind,
        ErrorKind::BadRequest
    );
    remove(&d.root, "iso", &protected).unwrap();
    remove(&d.root, "vms", &[]).unwrap();
    assert!(browse(&d.root, "").unwrap().is_empty());
    assert_eq!(
        remove(&d.root, "gone", &[]).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn inventory_rows_and_sources() {
    let d = ds();
    let store = Store::memory();
    store
        .with(|c| Ok(insert(c, "datastore1", &d.root)))
        .unwrap()
        .unwrap();
    let e = store
        .with(|c| Ok(insert(c, "again", &d.root)))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    let e = store
        .with(|c| Ok(insert(c, "rel", Path::new("x"))))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let row = get(&store, "datastore1").unwrap();
    let info = row.info();
    assert!(info.capacity_bytes > 0 && info.free_bytes <= info.capacity_bytes);
    assert_eq!(list(&store).unwrap().len(), 1);
    assert_eq!(get(&store, "nope").unwrap_err().kind, ErrorKind::NotFound);

    let src = resolve_source(&store, "[datastore1] iso/a.iso").unwrap();
    assert_eq!(src, d.root.join("iso/a.iso"));
    let host = resolve_source(&store, d.outside.join("secret").to_str().unwrap()).unwrap();
    assert!(host.ends_with("secret"));
    for bad in [
        "[datastore1] ../outside/secret",
        "[datastore1 iso/a.iso",
        "relative/path",
        "[datastore1] iso",
    ] {
        assert!(resolve_source(&store, bad).is_err(), "{bad}");
    }
    assert_eq!(
        resolve_source(&store, "[nope] a").unwrap_err().kind,
        ErrorKind::NotFound
    );
}
