//! Running one unit's batches: the session on the calling thread, the reading of each output
//! (fp16 widening, pooling, normalising: [`crate::readout`]) on a second thread, so that batch
//! *n* is pooled while batch *n + 1* runs (on a GPU, the CPU's pooling no longer leaves the GPU
//! idle). At most one output waits to be read, so memory stays at two batches' outputs.
//!
//! A batch that runs out of memory (ONNX Runtime's arena or CUDA saying so; see
//! [`crate::cuda::failure::is_out_of_memory`]) is cut in two and both halves are run, down to a
//! batch of one row, before the unit fails.

use std::collections::VecDeque;
use std::sync::mpsc::sync_channel;

use crate::batching;
use crate::cuda::failure::is_out_of_memory;
use crate::error::{Error, Result};

/// Runs batches and reads their outputs.
pub trait Runner {
    /// A batch's output, read on the reading thread.
    type Out: Send;
    /// Runs the batch of these rows (unit positions, longest first): its output, real tokens
    /// and padded tokens.
    fn run(&mut self, rows: &[usize]) -> Result<(Self::Out, u64, u64)>;
    /// Reads an output into `rows × dim` vectors.
    fn read(out: Self::Out) -> Result<Vec<f32>>;
    /// The padded tokens a batch of these rows has (rows × the longest).
    fn padded(&self, rows: &[usize]) -> u64;
}

/// What running a unit gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ran {
    /// Row-major `[rows, dim]`, in the unit's order.
    pub vectors: Vec<f32>,
    /// Real tokens.
    pub tokens: u64,
    /// Tokens including padding.
    pub padded_tokens: u64,
    /// The fewest padded tokens of a batch that ran out of memory, if one did.
    pub out_of_memory_at: Option<u64>,
}

/// Whether `err` is an out-of-memory failure of a run (its message says so, anywhere in the
/// chain).
pub fn out_of_memory(err: &Error) -> bool {
    is_out_of_memory(&crate::error::one_line(err))
}

/// Runs `batches` (row positions in a unit of `n` rows) through `runner`, reading outputs on a
/// second thread; vectors are `dim` wide.
pub fn run_unit<R: Runner>(
    runner: &mut R,
    batches: Vec<Vec<usize>>,
    n: usize,
    dim: usize,
) -> Result<Ran> {
    let mut ran = Ran {
        vectors: vec![0.0; n * dim],
        ..Ran::default()
    };
    let vectors = &mut ran.vectors;
    let (tx, rx) = sync_channel::<(Vec<usize>, R::Out)>(1);
    let (ran_result, read_result) = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("pooling".into())
            .spawn_scoped(scope, move || -> Result<()> {
                for (rows, out) in rx {
                    let v = R::read(out)?;
                    if v.len() != rows.len() * dim {
                        return Err(Error::OutputShape {
                            name: "pooled vectors".into(),
                            shape: vec![v.len() as i64],
                            expected: format!("{} rows of {dim}", rows.len()),
                        });
                    }
                    batching::scatter(vectors, dim, &rows, &v);
                }
                Ok(())
            });
        let reader = match reader {
            Ok(r) => r,
            Err(source) => {
                let e = Error::Io {
                    what: "starting the pooling thread",
                    source,
                };
                return (Err(e), Ok(()));
            }
        };
        let mut queue: VecDeque<Vec<usize>> = batches.into();
        let mut result = Ok((0, 0, None));
        let (mut tokens, mut padded, mut oom) = (0u64, 0u64, None::<u64>);
        while let Some(mut rows) = queue.pop_front() {
            match runner.run(&rows) {
                Ok((out, real, pad)) => {
                    tokens += real;
                    padded += pad;
                    if tx.send((rows, out)).is_err() {
                        break; // The reader stopped on an error: it is reported below.
                    }
                }
                Err(e) if rows.len() > 1 && out_of_memory(&e) => {
                    let size = runner.padded(&rows);
                    tracing::warn!(
                        rows = rows.len(),
                        padded_tokens = size,
                        "a batch ran out of memory; running it in two halves"
                    );
                    oom = Some(oom.map_or(size, |o: u64| o.min(size)));
                    let back = rows.split_off(rows.len() / 2);
                    queue.push_front(back);
                    queue.push_front(rows);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = Ok((tokens, padded, oom));
        }
        drop(tx);
        let read = reader.join().unwrap_or_else(|_| {
            Err(Error::Io {
                what: "pooling",
                source: std::io::Error::other("the pooling thread panicked"),
            })
        });
        (result, read)
    });
    read_result?;
    let (tokens, padded, oom) = ran_result?;
    ran.tokens = tokens;
    ran.padded_tokens = padded;
    ran.out_of_memory_at = oom;
    Ok(ran)
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
