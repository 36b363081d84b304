//! `data fetch mnist` against a local HTTP server on 127.0.0.1 that serves `../shared/data/mnist`:
//! good files are kept, a corrupted or substituted file is refused and nothing of it is written.

use crate::common;
#[allow(unused_imports)]
use crate::util::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use dnn2gp::data::mnist::FILES;

/// Serves `files` (URL path → body) on a free port until the test process ends; other paths
/// get 404. Returns the base URL.
pub(crate) fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = match files.get(&path) {
                Some(body) => s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| s.write_all(body)),
                None => s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    format!("http://{addr}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Routes: `/good/` the shared files; `/corrupt/` with bytes of the label file's gzip stream
/// overwritten; `/wrong/` with a valid gzip of altered label content.
fn mirror(mnist: &Path) -> String {
    let mut files = HashMap::new();
    for name in FILES {
        let body = std::fs::read(mnist.join(format!("{name}.gz"))).unwrap();
        let (mut corrupt, mut wrong) = (body.clone(), body.clone());
        if name == FILES[1] {
            let mid = corrupt.len() / 2;
            corrupt[mid..mid + 8].copy_from_slice(b"CORRUPT!");
            let mut content = dnn2gp::data::gunzip_if_gz(body.clone()).unwrap();
            let last = content.len() - 1;
            content[last] = (content[last] + 1) % 10;
            wrong = gzip(&content);
        }
        files.insert(format!("/good/{name}.gz"), body);
        files.insert(format!("/corrupt/{name}.gz"), corrupt);
        files.insert(format!("/wrong/{name}.gz"), wrong);
    }
    serve(files)
}

/// `dnn2gp data fetch mnist --mirror URL --dir DIR --quiet`.
fn fetch(mirror: &str, dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
        .args([
            "data", "fetch", "mnist", "--quiet", "--mirror", mirror, "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn fetch_keeps_good_files_and_refuses_bad_ones() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let base = mirror(&data.join("mnist"));
    let dir = common::tmpdir();

    let cache = dir.path().join("good");
    let got = fetch(&format!("{base}/good/"), &cache);
    assert!(got.status.success());
    assert_eq!(
        String::from_utf8_lossy(&got.stdout)
            .matches("(downloaded)")
            .count(),
        4
    );
    for name in FILES {
        assert_eq!(
            std::fs::read(cache.join(format!("{name}.gz"))).unwrap(),
            std::fs::read(data.join(format!("mnist/{name}.gz"))).unwrap()
        );
    }
    // Loadable, and a second fetch finds every file valid and downloads nothing.
    let m = dnn2gp::data::mnist::load(&cache).unwrap();
    assert_eq!((m.train_x.nrows(), m.test_y.len()), (60_000, 10_000));
    let again = fetch(&format!("{base}/nothing-here/"), &cache);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("(already there)")
            .count(),
        4
    );

    for (route, words) in [("corrupt", "gzip"), ("wrong", "checksum mismatch")] {
        let target = dir.path().join(route);
        let out = fetch(&format!("{base}/{route}"), &target);
        let msg = String::from_utf8_lossy(&out.stderr);
        // A download failure, not bad input: exit 1.
        assert_eq!(out.status.code(), Some(1), "{msg}");
        assert!(msg.contains(words) && msg.contains(FILES[1]), "{msg}");
        assert!(!target.join(format!("{}.gz", FILES[1])).exists());
        // No temporary files are left behind either.
        let left: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![format!("{}.gz", FILES[0])], "{route}");
    }

    let out = fetch(&format!("{base}/missing/"), &dir.path().join("m"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/missing/train-images-idx3-ubyte.gz") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn fetch_from_the_command_line() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let base = mirror(&data.join("mnist"));
    let dir = common::tmpdir();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dnn2gp"))
            .args(args)
            .arg("--quiet")
            .output()
            .unwrap()
    };
    let target = dir.path().join("mnist");
    let t = target.to_str().unwrap();
    let out = run(&[
        "data",
        "fetch",
        "mnist",
        "--mirror",
        &format!("{base}/good/"),
        "--dir",
        t,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("downloaded").count(), 4, "{stdout}");
    assert!(stdout.contains("6bbc9ace898e44ae57da46a324031adb"));

    let bad = dir.path().join("bad");
    let out = run(&[
        "data",
        "fetch",
        "mnist",
        "--mirror",
        &format!("{base}/wrong/"),
        "--dir",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("checksum mismatch") && !err.contains("panicked"),
        "{err}"
    );
    // A fetch that fails before any file leaves no folder behind: neither its own nor the
    // ones above.
    let deep = dir.path().join("new/data");
    let out = run(&[
        "data",
        "fetch",
        "digits",
        "--mirror",
        "http://127.0.0.1:9/",
        "--data-dir",
        deep.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("new").exists());

    let out = run(&["data", "fetch", "cifar10", "--dir", t]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown data set 'cifar10'"));
}
