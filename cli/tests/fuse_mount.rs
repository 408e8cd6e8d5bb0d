//! The FUSE mount through real processes: `strata mount` of a `strata dev`
//! volume, used by real programs (git, tar, cp, make) and by two mounts at
//! once (close-to-open visibility, locks that exclude each other).

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use common::*;

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fcntl_lock(file: &fs::File, kind: i32, wait: bool) -> std::io::Result<()> {
    let lock = libc::flock { l_type: kind as i16, l_whence: libc::SEEK_SET as i16, l_start: 0, l_len: 0, l_pid: 0 };
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    // SAFETY: a valid descriptor and a valid flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn flock(file: &fs::File, op: i32) -> std::io::Result<()> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[test]
fn two_mounts_see_each_others_closed_files_and_locks() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let a = Mount::new(&cluster, "mnt-a");
    let b = Mount::new(&cluster, "mnt-b");

    // Close-to-open: what A wrote and closed, B opens and reads whole.
    fs::write(a.path.join("shared.txt"), b"first version\n").unwrap();
    assert_eq!(fs::read(b.path.join("shared.txt")).unwrap(), b"first version\n");
    let longer: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(a.path.join("shared.txt"), &longer).unwrap();
    assert!(fs::read(b.path.join("shared.txt")).unwrap() == longer, "B sees the new contents after A closed");

    // fcntl locks: A's write lock excludes B's, until A releases it.
    let fa = fs::OpenOptions::new().read(true).write(true).open(a.path.join("shared.txt")).unwrap();
    let fb = fs::OpenOptions::new().read(true).write(true).open(b.path.join("shared.txt")).unwrap();
    fcntl_lock(&fa, libc::F_WRLCK, false).unwrap();
    let err = fcntl_lock(&fb, libc::F_WRLCK, false).unwrap_err();
    assert!(matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)), "{err}");
    fcntl_lock(&fa, libc::F_UNLCK, false).unwrap();
    fcntl_lock(&fb, libc::F_WRLCK, false).unwrap();
    fcntl_lock(&fb, libc::F_UNLCK, false).unwrap();

    // flock: the same across the two mounts.
    flock(&fa, libc::LOCK_EX).unwrap();
    let err = flock(&fb, libc::LOCK_EX | libc::LOCK_NB).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EWOULDBLOCK), "{err}");
    flock(&fa, libc::LOCK_UN).unwrap();
    flock(&fb, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    flock(&fb, libc::LOCK_UN).unwrap();

    // Closing a descriptor releases the fcntl locks its process held.
    fcntl_lock(&fa, libc::F_WRLCK, false).unwrap();
    fcntl_lock(&fb, libc::F_WRLCK, false).unwrap_err();
    drop(fa);
    fcntl_lock(&fb, libc::F_WRLCK, false).unwrap();
    drop(fb);

    // Names made on one mount appear on the other.
    fs::create_dir_all(a.path.join("dir/sub")).unwrap();
    fs::rename(a.path.join("shared.txt"), a.path.join("dir/sub/moved.txt")).unwrap();
    assert!(b.path.join("dir/sub/moved.txt").exists());
    let statfs = run(&a.path, "df", &["-B1", "."]);
    assert!(statfs.contains("strata:default"), "{statfs}");
}

/// Its own cluster, so it runs alongside the other tests of this file.
#[test]
fn cp_a_of_ten_thousand_small_files_agrees_with_find_and_du() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let m = Mount::new(&cluster, "mnt");
    let scratch = tempfile::tempdir().unwrap();
    let many = scratch.path().join("many");
    for d in 0..100 {
        let dir = many.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f:03}")), format!("{d}-{f}\n").repeat(f + 1)).unwrap();
        }
    }
    let started = std::time::Instant::now();
    run(scratch.path(), "cp", &["-a", "many", m.path.to_str().unwrap()]);
    eprintln!("cp -a of 10,000 files: {:.1} s", started.elapsed().as_secs_f64());
    let count = run(&m.path, "find", &["many", "-type", "f"]).lines().count();
    assert_eq!(count, 10_000);
    let apparent = |dir: &Path| run(dir, "du", &["-s", "--apparent-size", "-b", "many"]);
    let here = apparent(scratch.path());
    let there = apparent(&m.path);
    assert_eq!(here.split_whitespace().next(), there.split_whitespace().next(), "du: {here} vs {there}");
    // cp -a kept names, sizes, modes and times: listings of both trees agree
    // (directory sizes are the file system's own, so not compared).
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    for (kind, format) in [("f", "%p %s %m %T@\\n"), ("d", "%p %m %T@\\n")] {
        let listing = |dir: &Path| sorted(run(dir, "find", &["many", "-type", kind, "-printf", format]));
        assert_eq!(listing(scratch.path()), listing(&m.path), "cp -a of the {kind} entries");
    }
}

#[test]
fn real_programs_work_on_the_mount() {
    let mut cluster = DevCluster::new();
    cluster.start();
    let m = Mount::new(&cluster, "mnt");
    let scratch = tempfile::tempdir().unwrap();

    // git: clone a local repository onto the mount, then fsck it there.
    let origin = scratch.path().join("origin");
    fs::create_dir_all(&origin).unwrap();
    run(&origin, "git", &["init", "-q"]);
    for i in 0..20 {
        fs::write(origin.join(format!("file{i}.txt")), format!("line {i}\n").repeat(i + 1)).unwrap();
        run(&origin, "git", &["add", "."]);
        run(&origin, "git", &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", &format!("commit {i}")]);
    }
    run(&m.path, "git", &["clone", "-q", "--no-hardlinks", origin.to_str().unwrap(), "clone"]);
    run(&m.path.join("clone"), "git", &["fsck", "--full"]);
    assert_eq!(run(&m.path.join("clone"), "git", &["rev-list", "--count", "HEAD"]).trim(), "20");

    // tar: a source tree archived, extracted on the mount, compared.
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let archive = scratch.path().join("src.tar");
    run(tree, "tar", &["cf", archive.to_str().unwrap(), "common", "proto", "sdk"]);
    fs::create_dir_all(m.path.join("untar")).unwrap();
    run(&m.path.join("untar"), "tar", &["xf", archive.to_str().unwrap()]);
    for dir in ["common", "proto", "sdk"] {
        run(tree, "diff", &["-r", dir, m.path.join("untar").join(dir).to_str().unwrap()]);
    }

    // make -j2 of a small C project.
    let project = m.path.join("cproject");
    fs::create_dir_all(&project).unwrap();
    fs::write(project.join("a.c"), "int a(void) { return 40; }\n").unwrap();
    fs::write(project.join("b.c"), "int b(void) { return 2; }\n").unwrap();
    fs::write(
        project.join("main.c"),
        "#include <stdio.h>\nint a(void); int b(void);\nint main(void) { printf(\"%d\\n\", a() + b()); return 0; }\n",
    )
    .unwrap();
    fs::write(project.join("Makefile"), "prog: a.o b.o main.o\n\tcc -o prog a.o b.o main.o\n%.o: %.c\n\tcc -c $<\n")
        .unwrap();
    run(&project, "make", &["-j2"]);
    assert_eq!(run(&project, "./prog", &[]).trim(), "42");
}
