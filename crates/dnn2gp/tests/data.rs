//! Data loaders: CSV errors name file and line; Snelson's gap; UCI standardisation.

mod common;

use std::io::Write;

use dnn2gp::data::{csv, snelson, uci};
use dnn2gp::Error;

fn write(dir: &std::path::Path, name: &str, text: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(text).unwrap();
    p
}

fn parse_err(text: &[u8]) -> (String, usize, String) {
    let dir = common::tmpdir();
    let p = write(dir.path(), "bad.csv", text);
    match csv::read_dataset(&p) {
        Err(Error::Parse { file, line, msg }) => (file, line, msg),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn csv_with_and_without_header() {
    let dir = common::tmpdir();
    let a = write(dir.path(), "a.csv", b"x1,x2,y\n1,2,3\n4,5,6\n");
    let b = write(dir.path(), "b.csv", b"1,2,3\n4,5,6\n");
    let (da, db) = (
        csv::read_dataset(&a).unwrap(),
        csv::read_dataset(&b).unwrap(),
    );
    assert_eq!(da.x, db.x);
    assert_eq!((da.x.nrows(), da.x.ncols(), da.y.ncols()), (2, 2, 1));
    assert_eq!(da.y[(1, 0)], 6.0);
}

#[test]
fn csv_errors_name_file_and_line() {
    let (file, line, msg) = parse_err(b"x,y\n1,2\n3,oops\n");
    assert!(file.ends_with("bad.csv"));
    assert_eq!(line, 3);
    assert!(msg.contains("'oops'"), "{msg}");

    let (_, line, msg) = parse_err(b"1,2,3\n4,5\n");
    assert_eq!(line, 2);
    assert!(
        msg.contains("2 columns") && msg.contains("line 1 has 3"),
        "{msg}"
    );

    let (_, line, msg) = parse_err(b"1,2\nNaN,3\n");
    assert_eq!(line, 2);
    assert!(msg.contains("NaN"), "{msg}");

    let (_, _, msg) = parse_err(b"");
    assert!(msg.contains("empty"), "{msg}");

    let (_, _, msg) = parse_err(b"a,b\n");
    assert!(msg.contains("no data rows"), "{msg}");

    let (_, line, msg) = parse_err(b"1\n2\n");
    assert_eq!(line, 1);
    assert!(msg.contains("two columns"), "{msg}");

    let (_, _, msg) = parse_err(&[0xff, 0xfe, 0x00]);
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = csv::read_dataset(std::path::Path::new("no/such/file.csv")).unwrap_err();
    assert!(err.to_string().contains("no/such/file.csv"));
    assert!(err.is_input_error());
}

#[test]
fn snelson_gap_is_removed() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let s = snelson::load(&data.join("snelson")).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 200);
    assert!(s.test.len() > 20);
    for x in s.train.x.col(0).iter() {
        assert!(!(1.5..=3.0).contains(x));
    }
    for x in s.test.x.col(0).iter() {
        assert!((1.5..=3.0).contains(x));
    }
}

#[test]
fn uci_splits_are_standardised_on_the_training_set() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("uci/yacht");
    assert_eq!(uci::n_splits(&dir), 20);
    let s = uci::load(&dir, 3).unwrap();
    assert_eq!(s.train.len() + s.test.len(), 308);
    assert_eq!(s.train.x.ncols(), 6);
    for c in 0..6 {
        let col: Vec<f64> = s.train.x.col(c).iter().copied().collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
    }
    assert!(s.y_scale > 1.0);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Arbitrary bytes never panic the CSV reader: a data set or an error naming the file.
        #[test]
        fn csv_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let dir = common::tmpdir();
            let p = write(dir.path(), "fuzz.csv", &bytes);
            if let Err(e) = csv::read_dataset(&p) {
                prop_assert!(e.to_string().contains("fuzz.csv"));
            }
        }

        /// Numeric tables round-trip through the reader, with and without a header.
        #[test]
        fn numeric_tables_round_trip(rows in proptest::collection::vec(proptest::collection::vec(-1e6f64..1e6, 3), 1..20), header in any::<bool>()) {
            let mut text = if header { String::from("a,b,target\n") } else { String::new() };
            for r in &rows {
                text.push_str(&format!("{},{},{}\n", r[0], r[1], r[2]));
            }
            let dir = common::tmpdir();
            let d = csv::read_dataset(&write(dir.path(), "t.csv", text.as_bytes())).unwrap();
            prop_assert_eq!(d.len(), rows.len());
            for (i, r) in rows.iter().enumerate() {
                prop_assert_eq!(d.x[(i, 1)], r[1]);
                prop_assert_eq!(d.y[(i, 0)], r[2]);
            }
        }
    }
}

#[test]
fn mnist_idx_files_and_subsets() {
    use dnn2gp::data::mnist;
    let Some(data) = common::shared_data() else {
        return;
    };
    let dir = data.join("mnist");
    let labels = mnist::read_labels(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels.len(), 10_000);
    assert_eq!(&labels[..8], &[7, 2, 1, 0, 4, 1, 4, 9]);
    let images = mnist::read_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!((images.nrows(), images.ncols()), (10_000, 784));
    let (lo, hi) = images
        .col_iter()
        .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
        .fold((1.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    // The paper's subset: the first 30 of each class, sorted by class.
    let sub = mnist::class_subset(&labels, 30, 10);
    assert_eq!(sub.len(), 300);
    for (j, i) in sub.iter().enumerate() {
        assert_eq!(labels[*i], j / 30);
    }
    assert_eq!(sub[0], labels.iter().position(|l| *l == 0).unwrap());
    let (idx, y) = mnist::binary(&labels, 3, 8);
    assert!(idx
        .iter()
        .zip(&y)
        .all(|(i, y)| (labels[*i] == 8) == (*y == 1.0)));
    assert_eq!(mnist::one_hot(&[2, 0], 3)[(0, 2)], 1.0);
}

#[test]
fn bad_idx_files_are_refused_with_the_reason() {
    use dnn2gp::data::mnist::read_idx;
    let dir = common::tmpdir();
    let mut good = vec![0, 0, 8, 1, 0, 0, 0, 3, 5, 6, 7];
    let p = write(dir.path(), "ok.idx", &good);
    assert_eq!(read_idx(&p).unwrap().data, vec![5, 6, 7]);
    good.pop();
    let err = read_idx(&write(dir.path(), "short.idx", &good))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short.idx") && err.contains("truncated"),
        "{err}"
    );
    let err = read_idx(&write(dir.path(), "magic.idx", &[1, 2, 8, 1, 0, 0, 0, 0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("magic"), "{err}");
    let err = read_idx(&write(dir.path(), "type.idx", &[0, 0, 0x0d, 1, 0, 0, 0, 0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("0x0d"), "{err}");
    let err = read_idx(&write(dir.path(), "gz.idx", &[0x1f, 0x8b, 1, 2, 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gzip"), "{err}");
}

#[test]
fn gzipped_csv_digits() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let d = csv::read_dataset(&data.join("digits/digits.csv.gz")).unwrap();
    assert_eq!((d.len(), d.x.ncols()), (1797, 64));
    assert!(d
        .y
        .col(0)
        .iter()
        .all(|v| (0.0..=9.0).contains(v) && v.fract() == 0.0));
}
