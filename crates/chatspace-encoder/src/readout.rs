//! One batch's model output turned into its rows' vectors: fp16 widened to f32, the shape
//! checked, token states pooled, vectors truncated (`--truncate-dim`) and normalised.
//!
//! A [`Readout`] owns the output tensor (in host or pinned memory) and everything needed to
//! read it, so that it can be read on another thread while the session runs the next batch
//! (see [`crate::pipeline`]).

use ort::value::{DynValue, Tensor};

use crate::binding;
use crate::config::PoolingMode;
use crate::error::{Error, Result};
use crate::pooling::{self, Dims};

/// How the output is turned into one vector per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// The graph pools: `[rows, dim]`.
    Pooled,
    /// Token states `[rows, seq, width]`, pooled with these modes.
    Tokens(Vec<PoolingMode>),
}

/// How a model's outputs are read: the same for every batch.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    /// The output's name, for messages.
    pub output: String,
    /// How rows become vectors.
    pub head: Head,
    /// The output is float16 (an fp16 export): widened to f32 before pooling.
    pub half: bool,
    /// Real tokens left out of pooling at the start of each row (an excluded prompt's).
    pub skip: usize,
    /// `--truncate-dim`: keep the first this many dimensions, then normalise.
    pub truncate: Option<usize>,
    /// L2-normalise each vector.
    pub normalize: bool,
}

/// One batch's output, not yet read.
pub struct Readout {
    value: DynValue,
    settings: ReadSettings,
    rows: usize,
    seq: usize,
    /// The batch's attention mask, `[rows, seq]`.
    mask: Vec<i64>,
}

impl Readout {
    /// The output `value` of a `[rows, seq]` batch with attention mask `mask`.
    pub fn new(
        value: DynValue,
        settings: ReadSettings,
        rows: usize,
        seq: usize,
        mask: Vec<i64>,
    ) -> Self {
        Readout {
            value,
            settings,
            rows,
            seq,
            mask,
        }
    }

    /// `[rows, dim]` vectors, pooled and (if configured) normalised.
    pub fn vectors(self) -> Result<Vec<f32>> {
        let s = &self.settings;
        let widened: Vec<f32>;
        let full: Tensor<f32>;
        let (out_shape, data): (Vec<i64>, &[f32]) = if s.half {
            // fp16 exports: pooled in f32 like sentence-transformers' `model.half()` outputs
            // are after `.float()`.
            let t = binding::typed::<half::f16>(self.value).map_err(Error::Inference)?;
            let (shape, data) = binding::host_view(&t).map_err(Error::Inference)?;
            widened = data.iter().map(|x| x.to_f32()).collect();
            (shape, &widened)
        } else {
            full = binding::typed::<f32>(self.value).map_err(Error::Inference)?;
            binding::host_view(&full).map_err(Error::Inference)?
        };
        let bad_shape = |expected: String| Error::OutputShape {
            name: s.output.clone(),
            shape: out_shape.clone(),
            expected,
        };
        let (rows, seq) = (self.rows, self.seq);
        let mut vectors = match &s.head {
            Head::Pooled => {
                if out_shape.len() != 2 || out_shape[0] as usize != rows {
                    return Err(bad_shape(format!("[{rows}, dim]")));
                }
                data.to_vec()
            }
            Head::Tokens(modes) => {
                if out_shape.len() != 3
                    || out_shape[0] as usize != rows
                    || out_shape[1] as usize != seq
                {
                    return Err(bad_shape(format!("[{rows}, {seq}, width]")));
                }
                let d = Dims {
                    rows,
                    seq,
                    width: out_shape[2] as usize,
                };
                pooling::pool(data, &self.mask, d, modes, s.skip)
            }
        };
        if let Some(t) = s.truncate {
            let full = vectors.len() / rows.max(1);
            vectors = vectors
                .chunks(full.max(1))
                .flat_map(|v| &v[..t])
                .copied()
                .collect();
        }
        if s.normalize {
            let dim = vectors.len() / rows.max(1);
            pooling::normalize(&mut vectors, dim);
        }
        Ok(vectors)
    }
}
