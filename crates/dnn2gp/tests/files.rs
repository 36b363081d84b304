//! Output files: `.npy` round trip and atomic writes.

mod common;

use dnn2gp::io::{read_npy, write_atomic, write_npy};

#[test]
fn npy_round_trip() {
    let dir = common::tmpdir();
    let p = dir.path().join("a.npy");
    let data: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 1.0).collect();
    write_npy(&p, &[3, 4], &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(
        (bytes.len() - data.len() * 8) % 64,
        0,
        "header padded to 64 bytes"
    );
    let (shape, back) = read_npy(&p).unwrap();
    assert_eq!(shape, vec![3, 4]);
    assert_eq!(back, data);
}

#[test]
fn npy_errors() {
    let dir = common::tmpdir();
    let p = dir.path().join("b.npy");
    std::fs::write(&p, b"not numpy at all").unwrap();
    assert!(read_npy(&p).unwrap_err().to_string().contains("magic"));
    write_npy(&p, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&p, &bytes).unwrap();
    assert!(read_npy(&p)
        .unwrap_err()
        .to_string()
        .contains("needs 32 bytes"));
}

#[test]
fn atomic_write_leaves_no_temporary_file() {
    let dir = common::tmpdir();
    let p = dir.path().join("sub/c.txt");
    write_atomic(&p, b"hello").unwrap();
    write_atomic(&p, b"world").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"world");
    let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
