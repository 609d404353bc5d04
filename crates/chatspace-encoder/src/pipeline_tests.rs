//! The pipeline with a runner that fakes the model: vectors that say which row they are,
//! out-of-memory answers above a size, and failures.

use super::*;

/// A failed run with this message (as ONNX Runtime's would read; `ort::Error` itself needs the
/// library loaded).
fn failed(msg: &str) -> Error {
    Error::Io {
        what: "running the batch",
        source: std::io::Error::other(msg.to_string()),
    }
}

/// Gives row `r` the vector `[r, r]`; runs out of memory on batches of more than `fits` rows;
/// fails outright on `poison`.
struct Fake {
    fits: usize,
    poison: Option<usize>,
    ran: Vec<Vec<usize>>,
}

impl Runner for Fake {
    type Out = Vec<f32>;

    fn run(&mut self, rows: &[usize]) -> Result<(Vec<f32>, u64, u64)> {
        self.ran.push(rows.to_vec());
        if self.poison.is_some_and(|p| rows.contains(&p)) {
            return Err(failed("indices element out of bounds"));
        }
        if rows.len() > self.fits {
            return Err(failed(
                "Non-zero status code returned while running MatMul node. Status Message: \
                 Failed to allocate memory for requested buffer of size 17179869184",
            ));
        }
        let v = rows.iter().flat_map(|&r| [r as f32, r as f32]).collect();
        Ok((v, rows.len() as u64, self.padded(rows)))
    }

    fn read(out: Vec<f32>) -> Result<Vec<f32>> {
        Ok(out)
    }

    fn padded(&self, rows: &[usize]) -> u64 {
        10 * rows.len() as u64
    }
}

fn fake(fits: usize) -> Fake {
    Fake {
        fits,
        poison: None,
        ran: Vec::new(),
    }
}

#[test]
fn every_row_gets_its_own_vector_in_unit_order() {
    let mut f = fake(usize::MAX);
    let ran = run_unit(&mut f, vec![vec![3, 1], vec![0, 4], vec![2]], 5, 2).unwrap();
    assert_eq!(ran.vectors, [0., 0., 1., 1., 2., 2., 3., 3., 4., 4.]);
    assert_eq!((ran.tokens, ran.padded_tokens), (5, 50));
    assert_eq!(ran.out_of_memory_at, None);
    assert_eq!(f.ran.len(), 3);
}

#[test]
fn an_out_of_memory_batch_is_split_until_it_fits() {
    let mut f = fake(2);
    let ran = run_unit(&mut f, vec![vec![0, 1, 2, 3, 4, 5, 6], vec![7]], 8, 2).unwrap();
    let want: Vec<f32> = (0..8).flat_map(|r| [r as f32, r as f32]).collect();
    assert_eq!(ran.vectors, want);
    // 7 rows → 3 + 4 → 3 → 1 + 2; 4 → 2 + 2; then the batch after them.
    assert_eq!(
        f.ran,
        vec![
            vec![0, 1, 2, 3, 4, 5, 6],
            vec![0, 1, 2],
            vec![0],
            vec![1, 2],
            vec![3, 4, 5, 6],
            vec![3, 4],
            vec![5, 6],
            vec![7],
        ]
    );
    // The smallest batch that did not fit had 3 rows (30 padded tokens).
    assert_eq!(ran.out_of_memory_at, Some(30));
    assert_eq!(ran.tokens, 8);
}

#[test]
fn a_single_row_out_of_memory_fails_the_unit() {
    let mut f = fake(0);
    let err = run_unit(&mut f, vec![vec![0, 1]], 2, 2).unwrap_err();
    assert!(out_of_memory(&err), "{err}");
    assert_eq!(f.ran, vec![vec![0, 1], vec![0]]);
}

#[test]
fn other_failures_are_not_retried() {
    let mut f = Fake {
        poison: Some(1),
        ..fake(usize::MAX)
    };
    let err = run_unit(&mut f, vec![vec![0, 1], vec![2]], 3, 2).unwrap_err();
    assert!(!out_of_memory(&err));
    assert_eq!(f.ran, vec![vec![0, 1]]);
}

/// A reader failure (a bad output shape) stops the unit with that error.
struct ShortReads;

impl Runner for ShortReads {
    type Out = ();
    fn run(&mut self, rows: &[usize]) -> Result<((), u64, u64)> {
        Ok(((), rows.len() as u64, rows.len() as u64))
    }
    fn read(_: ()) -> Result<Vec<f32>> {
        Ok(vec![1.0])
    }
    fn padded(&self, rows: &[usize]) -> u64 {
        rows.len() as u64
    }
}

#[test]
fn a_bad_output_from_the_reader_fails_the_unit() {
    let err = run_unit(&mut ShortReads, vec![vec![0], vec![1]], 2, 4).unwrap_err();
    assert!(matches!(err, Error::OutputShape { .. }), "{err}");
}
