//! Pooling token states into one vector per row, and L2 normalisation; pure functions over
//! row-major slices, mirroring sentence-transformers' `Pooling` and `Normalize` modules.
//!
//! `hidden` is `[rows, seq, width]`, `mask` is `[rows, seq]` (1 for real tokens). Padding may sit
//! on either side: every mode looks at the mask, never at where the padding is, so a row pools
//! the same alone as in any batch. Two modes differ from sentence-transformers in *batched,
//! left-padded* input only, where its result depends on the batch (and matches neither its own
//! unbatched result nor ours): `cls` takes the first real token (sentence-transformers takes
//! position 0, a pad token under left padding), and `weightedmean` weighs real tokens 1, 2, 3...
//! (sentence-transformers weighs by padded position). With right padding, or one row at a time,
//! both are exactly sentence-transformers'.

use crate::config::PoolingMode;

/// Shape of a batch of token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Rows in the batch.
    pub rows: usize,
    /// Positions per row (padding included).
    pub seq: usize,
    /// Width of one token state.
    pub width: usize,
}

/// What sentence-transformers fills padded positions with before max pooling.
const MAX_POOL_PAD: f32 = -1e9;

/// Pools every row with each of `modes`, concatenated in the order given; returns
/// `[rows, width * modes.len()]`. The first `skip` real tokens of each row (a prompt's, see
/// [`crate::prompt`]) are left out, as sentence-transformers masks them; `weightedmean` still
/// counts its weights from the row's first real token, as it does.
pub fn pool(hidden: &[f32], mask: &[i64], d: Dims, modes: &[PoolingMode], skip: usize) -> Vec<f32> {
    debug_assert_eq!(hidden.len(), d.rows * d.seq * d.width);
    debug_assert_eq!(mask.len(), d.rows * d.seq);
    let dim = d.width * modes.len();
    let mut out = vec![0.0f32; d.rows * dim];
    for r in 0..d.rows {
        let h = &hidden[r * d.seq * d.width..(r + 1) * d.seq * d.width];
        let m = &mask[r * d.seq..(r + 1) * d.seq];
        for (k, &mode) in modes.iter().enumerate() {
            let o = &mut out[r * dim + k * d.width..r * dim + (k + 1) * d.width];
            pool_row(h, m, d.width, mode, skip, o);
        }
    }
    out
}

/// Pools one row (`h` is `[seq, width]`) into `out` (`width` wide).
fn pool_row(h: &[f32], m: &[i64], width: usize, mode: PoolingMode, skip: usize, out: &mut [f32]) {
    let token = |p: usize| &h[p * width..(p + 1) * width];
    let all_real = || {
        m.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(p, _)| p)
    };
    // The real tokens pooled over, with their place among all of the row's real tokens.
    let real = || all_real().enumerate().skip(skip);
    match mode {
        PoolingMode::Cls => out.copy_from_slice(token(real().next().map_or(0, |(_, p)| p))),
        PoolingMode::LastToken => match real().last() {
            Some((_, p)) => out.copy_from_slice(token(p)),
            // sentence-transformers takes the last position when a row has no real token, and
            // masks it: zero once a prompt is masked out, that position itself otherwise.
            None if skip > 0 => out.fill(0.0),
            None => out.copy_from_slice(token(m.len() - 1)),
        },
        PoolingMode::Max => {
            out.fill(f32::NEG_INFINITY);
            let pooled: Vec<usize> = real().map(|(_, p)| p).collect();
            for p in 0..m.len() {
                let counted = pooled.binary_search(&p).is_ok();
                for (o, &x) in out.iter_mut().zip(token(p)) {
                    *o = o.max(if counted { x } else { MAX_POOL_PAD });
                }
            }
        }
        PoolingMode::Mean | PoolingMode::MeanSqrtLen | PoolingMode::WeightedMean => {
            out.fill(0.0);
            let mut total = 0.0f32;
            for (k, p) in real() {
                let w = if mode == PoolingMode::WeightedMean {
                    (k + 1) as f32
                } else {
                    1.0
                };
                total += w;
                for (o, &x) in out.iter_mut().zip(token(p)) {
                    *o += w * x;
                }
            }
            let total = total.max(1e-9);
            let div = if mode == PoolingMode::MeanSqrtLen {
                total.sqrt()
            } else {
                total
            };
            out.iter_mut().for_each(|o| *o /= div);
        }
    }
}

/// L2-normalises each `dim`-wide vector in place: `x / max(‖x‖, 1e-12)`, like
/// `torch.nn.functional.normalize`.
pub fn normalize(vectors: &mut [f32], dim: usize) {
    for v in vectors.chunks_mut(dim.max(1)) {
        let norm = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        let scale = 1.0 / norm.max(1e-12);
        v.iter_mut()
            .for_each(|x| *x = (f64::from(*x) * scale) as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rows, three positions, width 2. Row 0 is right-padded (2 real tokens), row 1 is
    /// left-padded (2 real tokens) holding the same tokens.
    fn batch() -> (Vec<f32>, Vec<i64>, Dims) {
        let hidden = vec![
            1.0, 10.0, 3.0, -2.0, 99.0, 99.0, // row 0: a, b, pad
            99.0, 99.0, 1.0, 10.0, 3.0, -2.0, // row 1: pad, a, b
        ];
        let mask = vec![1, 1, 0, 0, 1, 1];
        let d = Dims {
            rows: 2,
            seq: 3,
            width: 2,
        };
        (hidden, mask, d)
    }

    fn run(mode: PoolingMode) -> Vec<f32> {
        let (h, m, d) = batch();
        pool(&h, &m, d, &[mode], 0)
    }

    #[test]
    fn mean_ignores_padding_on_both_sides() {
        assert_eq!(run(PoolingMode::Mean), [2.0, 4.0, 2.0, 4.0]);
    }

    #[test]
    fn mean_sqrt_len_divides_by_root_of_count() {
        let s = 2f32.sqrt();
        assert_eq!(
            run(PoolingMode::MeanSqrtLen),
            [4.0 / s, 8.0 / s, 4.0 / s, 8.0 / s]
        );
    }

    #[test]
    fn weighted_mean_weighs_by_position_among_real_tokens() {
        // (1*a + 2*b) / 3
        let want = [(1.0 + 6.0) / 3.0, (10.0 - 4.0) / 3.0];
        assert_eq!(run(PoolingMode::WeightedMean), [want, want].concat());
    }

    #[test]
    fn max_takes_real_tokens_only() {
        assert_eq!(run(PoolingMode::Max), [3.0, 10.0, 3.0, 10.0]);
    }

    #[test]
    fn cls_is_the_first_real_token() {
        assert_eq!(run(PoolingMode::Cls), [1.0, 10.0, 1.0, 10.0]);
    }

    #[test]
    fn last_token_works_with_left_and_right_padding() {
        assert_eq!(run(PoolingMode::LastToken), [3.0, -2.0, 3.0, -2.0]);
    }

    #[test]
    fn several_modes_concatenate_in_the_given_order() {
        let (h, m, d) = batch();
        let v = pool(&h, &m, d, &[PoolingMode::Cls, PoolingMode::Mean], 0);
        assert_eq!(&v[..4], [1.0, 10.0, 2.0, 4.0]);
        assert_eq!(v.len(), 8);
    }

    #[test]
    fn a_row_without_real_tokens_does_not_divide_by_zero() {
        let d = Dims {
            rows: 1,
            seq: 2,
            width: 1,
        };
        let h = [5.0, 7.0];
        assert_eq!(pool(&h, &[0, 0], d, &[PoolingMode::Mean], 0), [0.0]);
        assert_eq!(pool(&h, &[0, 0], d, &[PoolingMode::Max], 0), [MAX_POOL_PAD]);
        assert_eq!(pool(&h, &[0, 0], d, &[PoolingMode::LastToken], 0), [7.0]);
    }

    #[test]
    fn a_skipped_prompt_is_left_out_on_either_padding_side() {
        let (h, m, d) = batch();
        // One prompt token: only token b (3, -2) is pooled, in both rows.
        let b = [3.0, -2.0, 3.0, -2.0];
        for mode in [PoolingMode::Mean, PoolingMode::Cls, PoolingMode::Max] {
            assert_eq!(pool(&h, &m, d, &[mode], 1), b, "{mode:?}");
        }
        // weightedmean keeps b's weight 2 (its place among all real tokens): 2b / 2.
        assert_eq!(pool(&h, &m, d, &[PoolingMode::WeightedMean], 1), b);
        assert_eq!(pool(&h, &m, d, &[PoolingMode::LastToken], 2), [0.0; 4]);
    }

    #[test]
    fn normalize_makes_unit_vectors_and_leaves_zero_alone() {
        let mut v = vec![3.0, 4.0, 0.0, 0.0];
        normalize(&mut v, 2);
        assert_eq!(v, [0.6, 0.8, 0.0, 0.0]);
    }
}
